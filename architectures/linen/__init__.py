"""The zoo in Flax linen."""
