"""face4d: 4D facial animation from a diffusion model over 3D landmark sequences."""
from face4d.errors import Face4DError

__version__ = "0.1.0"
__all__ = ["Face4DError", "__version__"]
