"""The only code that knows Keras files: which form a file is, its config, and where its weights lie.

Reads with h5py, json, zipfile and the protobuf runtime (for TensorFlow's checkpoint and SavedModel
forms) only; never imports TensorFlow or Keras, never executes or unpickles anything from a file.
"""

from converter.keras.reader import read_model, saved_states

__all__ = ["read_model", "saved_states"]
