"""Model backends of the server: transformers (any machine) and exllamav2 (GPU)."""
