"""A whole server run with sign-in on, at the default log level: after sign-ins (right
and wrong), tokens of every grant, FHIR, DICOMweb, DIMSE and HL7 requests and the
patient reading their access log, the server's log holds none of the secrets (access,
refresh and id tokens, the code, the client assertion, passwords) nor the patient names
and identifiers used (issue 15: "no token, client assertion, patient name or identifier
ever appears in application logs"). test_logs_privacy.py covers the doors without tokens.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.integration.test_audit_security_events import register, sign_in
from tests.integration.test_mllp import adt, msa, send
from tests.integration.test_smart_server import (
    PASSWORD,
    assertion,
    authorize_params,
    backend_token,
    exchange,
    new_verifier,
    sign_in_and_approve,
)
from tests.support.dcmtk import storescu, successes
from tests.support.dicom import renamed
from tests.support.servers import start_server

pytestmark = pytest.mark.integration
FHIR_JSON = {"Content-Type": "application/fhir+json"}
CT_SMALL_NAME = "CompressedSamples"  # CT_small.dcm's PatientName


def test_a_signed_in_run_logs_no_secret_and_no_patient_data(tmp_path: Path, store: Any) -> None:
    server = start_server(tmp_path / "server", store.uri, auth=True,
                          env={"MEDBRIDGE_LOG_LEVEL": "info"})  # fmt: skip
    try:
        realm = register(server, tmp_path)
        unique = uuid.uuid4().hex
        family, identifier = f"Kazlauskiene{unique[:8]}", f"LT-{unique[:12]}"
        hl7_family, hl7_id = f"Petraitis{unique[:8]}", f"H{unique[:10]}"
        dicom_id = f"D{unique[:10]}"

        signed = assertion(realm)
        backend = backend_token(realm, signed, "system/*.cruds")
        assert backend.status_code == 200, backend.text
        system = {"Authorization": f"Bearer {backend.json()['access_token']}"}
        fhir = server.fhir_base
        patient = {
            "resourceType": "Patient", "id": realm.patient, "name": [{"family": family}],
            "identifier": [{"system": "urn:oid:1.3.6.1.4.1.99999.1", "value": identifier}],
        }  # fmt: skip
        made = httpx.put(f"{fhir}/Patient/{realm.patient}", json=patient,
                         headers={**system, **FHIR_JSON}, timeout=30)  # fmt: skip
        assert made.status_code in (200, 201), made.text
        observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                       "subject": {"reference": f"Patient/{realm.patient}"}}  # fmt: skip
        created = httpx.post(f"{fhir}/Observation", json=observation,
                             headers={**system, **FHIR_JSON}, timeout=30)  # fmt: skip
        assert created.status_code == 201, created.text
        assert httpx.get(f"{fhir}/Patient", params={"identifier": identifier}, headers=system,
                         timeout=30).status_code == 200  # fmt: skip

        # the patient signs in (once wrongly first) and reads their records and access log
        wrong = f"wrong-{unique[:10]}"
        assert sign_in(realm, realm.user, wrong).status_code == 401
        verifier = new_verifier()
        redirect = sign_in_and_approve(realm, authorize_params(realm, verifier))
        assert redirect.status_code == 302, redirect.text
        code = parse_qs(urlsplit(redirect.headers["location"]).query)["code"][0]
        tokens = exchange(realm, code, verifier)
        assert tokens.status_code == 200, tokens.text
        body = tokens.json()
        own = {"Authorization": f"Bearer {body['access_token']}"}
        assert httpx.get(f"{fhir}/Patient/{realm.patient}", headers=own).status_code == 200
        assert httpx.get(f"{fhir}/Observation", headers=own).status_code == 200
        log_read = httpx.get(f"{fhir}/AuditEvent", params={"patient": realm.patient}, headers=own)
        assert log_read.status_code == 200, log_read.text
        assert log_read.json().get("entry"), "the patient's access log is empty"
        # a refused token is not logged either
        forged = {"Authorization": "Bearer x" + body["access_token"]}
        assert httpx.get(f"{fhir}/Patient", headers=forged).status_code == 401

        # HL7 and DICOM with patient names and identifiers
        [ack] = asyncio.run(send(server, adt("A08", unique, hl7_id, f"{hl7_family}^Jonas")))
        assert msa(ack)[1] == "AA", ack
        dicom = tmp_path / "ct.dcm"
        dicom.write_bytes(renamed("CT_small.dcm", study=generate_uid(), patient_id=dicom_id))
        assert successes(storescu(server.dicom_port, [dicom], "MODALITY1")) == 1
        qido = httpx.get(f"{server.base_url}/dicomweb/studies", params={"PatientID": dicom_id},
                         headers=system, timeout=30)  # fmt: skip
        assert qido.status_code == 200, qido.text

        log = server.log()
        assert "ready: FHIR base" in log  # the log is being written
        secrets = {
            "backend access token": backend.json()["access_token"],
            "access token": body["access_token"],
            "refresh token": body["refresh_token"],
            "id token": body["id_token"],
            "code": code,
            "client assertion": signed,
            "wrong password": wrong,
            "password": PASSWORD,
        }
        for label, secret in secrets.items():
            assert secret not in log, label
            assert secret[:24] not in log, f"the start of the {label}"
        for label, marker in {"name": family, "identifier": identifier, "HL7 name": hl7_family,
                              "HL7 identifier": hl7_id, "DICOM identifier": dicom_id,
                              "DICOM name": CT_SMALL_NAME}.items():  # fmt: skip
            assert marker not in log, label
    finally:
        server.stop()
