"""Session fixtures (owned by the fixtures_train stage)."""
