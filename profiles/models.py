"""The one module that imports FHIR models: pinned to `fhir.resources.R4B`.

R4B's models are identical to R4 for the resource types MedBridge serves; parsing R4
JSON with the package's default (R5) models would silently drop or reject elements.
"""

from __future__ import annotations

from functools import cache

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel

FHIR_VERSION = "4.0.1"


@cache
def model_for(resource_type: str) -> type[FHIRAbstractModel] | None:
    """The R4B model class of a resource type, or None for a name that is not one."""
    if not resource_type or not resource_type[0].isupper():
        return None
    try:
        model: type[FHIRAbstractModel] = get_fhir_model_class(resource_type)
    except ValueError:
        return None
    return model
