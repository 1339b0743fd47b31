"""Monitoring: reference profiles, window statistics, control charts designed from a false-alarm
budget, drift reports and alerts that escalate to a person."""
