"""Prefect flows: thin compositions of climate_ml library calls."""
