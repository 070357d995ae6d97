"""detkit: a Detectron-style object-detection framework; Faster R-CNN is its reference detector."""

import warnings

# fvcore scripts its focal loss when imported, which recent torch reports as deprecated on
# every import of detkit. The warning is about fvcore's code, not the user's: silence only it.
warnings.filterwarnings(
    "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
)

__version__ = "0.1.0"
