"""kerasls: Keras 3 project templates for soft-target classification with label smoothing and calibration.

Importing `kerasls` does not import TensorFlow; the modules that need it (training, export, preprocessing)
import it themselves.
"""

__version__ = "0.1.0"
