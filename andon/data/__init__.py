"""Data in: the raw batch layout (``batches``), dataset versions (``datasets``), ingest of real folders
(``ingest``), public data sets (``public``)."""
