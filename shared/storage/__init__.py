"""Storage: the engine and the tables, one repository module per area (every SQL
statement recserve makes lives in one of them), ingestion, imports and retention."""
