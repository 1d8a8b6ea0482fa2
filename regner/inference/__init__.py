"""Using a saved model: loading, evaluation, prediction, ONNX export, serving, CLUENER submission."""
