"""Exception types. Every error a user can cause is a ``ClimateMLError`` with a one-line message
that names the file / variable / parameter and what was wrong; the CLI prints it without a
traceback and exits non-zero."""


class ClimateMLError(ValueError):
    """Base class for user-facing errors (bad input, bad configuration, bad query)."""


class CatalogError(ClimateMLError):
    """A catalog YAML file is malformed or an entry is unknown."""


class IngestError(ClimateMLError):
    """A source file cannot be read or does not meet the canonical schema."""


class DownloadError(IngestError):
    """A source could not be fetched, or arrived damaged (network, server, a file not yet
    published): the one ingest error worth trying again later."""


class SchemaError(ClimateMLError):
    """A dataset does not follow the canonical observation or forecast schema."""


class StoreError(ClimateMLError):
    """The Zarr store is missing a dataset, or a write would change data already stored."""


class DamagedError(StoreError):
    """Stored data that can no longer be read (damaged metadata, lost chunks, a snapshot or a
    record cut short): the operator's to mend, not the caller's (HTTP 500, not 400)."""


class ModelError(ClimateMLError):
    """A model file cannot be loaded or breaks the forecaster contract."""


class QueryError(ClimateMLError):
    """A query parameter (problem, model, init range, lead, format) is invalid."""
