"""A trained model outside training: export to TFLite (float32, int8), ONNX and StableHLO
(`exports` writes them and their parity report; one module per format), BatchNorm folded into
the convs (`folded`), and prediction (`predictor`)."""
