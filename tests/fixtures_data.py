"""Session fixtures (owned by the fixtures_data stage)."""
