"""CT volumes: loading, preprocessing, writing, and the procedural lumbar phantoms."""
