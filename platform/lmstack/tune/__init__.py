"""`lmstack tune`: Ray Tune over lmstack training runs, driven by the recipe's `tune` section."""
