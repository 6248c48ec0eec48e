"""Model families, loading, task variants, schedulers: everything that knows diffusers pipelines."""
