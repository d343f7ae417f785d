"""Evaluating a trained model on a dataset split (never imports the training loop)."""
