"""Prefect flows: thin DAGs that wire tasks. Read them like the whiteboard drawing."""
