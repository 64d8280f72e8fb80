"""L2: the Zarr store (writer, reader) and its integrity (leases, atomic writes, digests, verify),
ingestion with its readers and folder layouts, patient splits, the streaming loader, summary and preview.

Other packages import these names from here, never from the modules (the layer contract in the README)."""

from synthgen._lazy import lazy_exports

_EXPORTS = {
    "atomic_write": "integrity",
    "StoreFiles": "integrity",
    "Lease": "integrity",
    "acquire_lease": "integrity",
    "release_lease": "integrity",
    "renew_lease": "integrity",
    "read_lease": "integrity",
    "store_lease": "integrity",
    "aside_url": "integrity",
    "swap_in": "integrity",
    "recover": "integrity",
    "clear_scratch": "integrity",
    "shard_keys": "integrity",
    "store_state": "store",
    "verify_store": "verify",
    "VerifyReport": "verify",
    "check_shard": "verify",
    "IngestConfig": "ingestion",
    "DEFAULT_PATTERNS": "layouts",
    "ingest": "ingestion",
    "discover": "layouts",
    "LoaderConfig": "loader",
    "StoreMix": "loader",
    "StoreStream": "loader",
    "StreamPlan": "loader",
    "make_loader": "loader",
    "parse_mix": "loader",
    "plan_stream": "loader",
    "write_preview": "preview",
    "read_volume": "readers",
    "is_test_patient": "splits",
    "split_indices": "splits",
    "store_patients": "splits",
    "StoreReader": "store",
    "StoreWriter": "store",
    "delete_store": "store",
    "is_local": "store",
    "store_exists": "store",
    "use_fast_codecs": "store",
    "format_summary": "summary",
    "summarize_store": "summary",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
