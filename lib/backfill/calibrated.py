"""The former name of `embedded_data` (the embedded default dataset), kept while notebook 01 imports it."""
from .embedded_data import *  # noqa: F401,F403
