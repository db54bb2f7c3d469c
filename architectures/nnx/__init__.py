"""The zoo in Flax NNX."""
