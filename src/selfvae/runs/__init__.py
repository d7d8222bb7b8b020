"""Run folders and model folders: their layout, checkpoints, what they store, loading and export.

Layers: commands, training, evaluation and the codec use this package; it uses the models below it.
"""
