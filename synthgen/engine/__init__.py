"""Label sources, generation plan, scheduling, Zarr I/O, loaders and inference backends."""
