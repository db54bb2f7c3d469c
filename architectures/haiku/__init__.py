"""The zoo in Haiku."""
