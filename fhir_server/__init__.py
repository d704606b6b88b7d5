"""The FHIR R4 REST API: router, pipeline, versioned repository on MongoDB, search."""
