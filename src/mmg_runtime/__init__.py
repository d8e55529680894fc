"""mmg_runtime: the deploy side of mmg-export.

Loads the artifact directories that ``mmg-export build`` writes and drives
video -> vision encoder -> MMG-Vid pruner -> LLM. Imports without torch: a Jetson may carry
only TensorRT (or ONNX Runtime) and numpy.
"""
