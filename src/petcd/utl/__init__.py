"""petcdutl: offline tools (snapshot status and restore) for petcd's on-disk formats."""
