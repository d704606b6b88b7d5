"""The `app-config.js` MedBridge serves in place of the package's: OHIF's `window.config`
pointing its DICOMweb data source at this server's /dicomweb and its OpenID Connect
sign-in at this server's authorization server (docs/viewer.md, "Configuration").

Made from data, never from string surgery: a dict serialised as JSON, which is valid
JavaScript, so no value can break out of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# OHIF's DICOMweb data source (extensions/default/src/DicomWebDataSource), told what
# MedBridge's DICOMweb answers (docs/dicom.md): QIDO with fuzzy matching, wildcards and
# includefield; WADO-RS metadata, frames, bulk data, rendered and thumbnail
DATA_SOURCE = "@ohif/extension-default.dataSourcesModule.dicomweb"
SOURCE_NAME = "medbridge"
# what the viewer may do: search and read studies (docs/smart.md, "Enforcement": QIDO is
# `s`, WADO `r` on ImagingStudy). `user/` for clinicians; a Patient or RelatedPerson
# account is granted the `patient/` form instead (smart/patient_context.py)
SCOPES = ("openid", "fhirUser", "user/ImagingStudy.rs")
REDIRECT_PATH = "/callback"


@dataclass(frozen=True)
class ViewerConfig:
    public_base: str  # scheme://host[:port] of this server (the configured public base)
    base_path: str  # where the viewer is served, e.g. "/viewer"
    dicomweb_path: str  # "/dicomweb"
    fhir_path: str  # "/fhir": the audience the authorization server expects
    auth_path: str  # "/auth": the issuer
    client_id: str

    @property
    def redirect_uri(self) -> str:
        return self.public_base + self.base_path + REDIRECT_PATH

    def window_config(self) -> dict[str, Any]:
        dicomweb = self.public_base + self.dicomweb_path
        return {
            "routerBasename": self.base_path,
            "extensions": [],
            "modes": [],
            "customizationService": {},
            "showStudyList": True,
            "maxNumberOfWebWorkers": 3,
            "showWarningMessageForCrossOrigin": False,
            "showCPUFallbackMessage": True,
            "showLoadingIndicator": True,
            "strictZSpacingForVolumeViewport": True,
            "investigationalUseDialog": {"option": "never"},
            "showErrorDetails": "production",
            "defaultDataSourceName": SOURCE_NAME,
            "dataSources": [
                {
                    "namespace": DATA_SOURCE,
                    "sourceName": SOURCE_NAME,
                    "configuration": {
                        "friendlyName": "MedBridge",
                        "name": SOURCE_NAME,
                        "qidoRoot": dicomweb,
                        "wadoRoot": dicomweb,
                        "wadoUriRoot": dicomweb,
                        "qidoSupportsIncludeField": True,
                        "imageRendering": "wadors",
                        "thumbnailRendering": "wadors",
                        "enableStudyLazyLoad": True,
                        "supportsFuzzyMatching": True,
                        "supportsWildcard": True,
                        "staticWado": False,
                        "singlepart": "bulkdata,video",
                        "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                        "omitQuotationForMultipartRequest": True,
                    },
                }
            ],
            "oidc": [
                {
                    "authority": self.public_base + self.auth_path,
                    "client_id": self.client_id,
                    # relative: OHIF prefixes origin + routerBasename (OpenIdConnectRoutes)
                    "redirect_uri": REDIRECT_PATH,
                    # OHIF routes this path (made absolute under routerBasename) to its
                    # sign-out callback: "/" would be "/viewer/", which under the basename
                    # is also the "viewer" mode's route, and every deep link
                    # (/viewer/viewer?StudyInstanceUIDs=...) would be taken for a sign-out
                    "post_logout_redirect_uri": "/signed-out",
                    "response_type": "code",  # oidc-client-ts, code flow with PKCE S256
                    "scope": " ".join(SCOPES),
                    # no silent renew: it loads silent-refresh.html (a CDN script) in an
                    # iframe and needs prompt=none, which the sign-in pages do not offer
                    "automaticSilentRenew": False,
                    "revokeAccessTokenOnSignout": True,
                    "loadUserInfo": False,
                    # SMART: the authorization request names the FHIR base it is for
                    "extraQueryParams": {"aud": self.public_base + self.fhir_path},
                }
            ],
        }

    def script(self) -> bytes:
        body = json.dumps(self.window_config(), indent=2, sort_keys=True)
        return f"/* made by MedBridge (viewer/config.py) */\nwindow.config = {body};\n".encode()
