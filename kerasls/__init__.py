"""kerasls: Keras 3 project templates for soft-target classification with label smoothing and calibration.

Importing `kerasls` does not import TensorFlow; the modules that need it (training, export, preprocessing)
import it themselves.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) hides kerasls' own output; a user who wants
# it back sets TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
