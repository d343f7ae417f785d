"""A trained model outside training: TFLite export with its parity report, and prediction."""
