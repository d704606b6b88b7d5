"""Settings from command-line options and `MEDBRIDGE_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from access.budget import Budget
from consent.facts import Policy
from imaging.upkeep import RetryPolicy
from mappings.hl7v2.tables import parse_order_domains
from smart.authority import AuthorityOptions


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDBRIDGE_", extra="ignore")

    data_dir: Path = Field(
        Path("medbridge-data"), description="where the embedded store and objects live"
    )
    host: str = Field("127.0.0.1", description="address every listener binds")
    http_port: int = Field(8080, ge=0, le=65535)
    mllp_port: int = Field(2575, ge=0, le=65535)
    dicom_port: int = Field(11112, ge=0, le=65535)
    mongodb_uri: str | None = Field(None, description="external MongoDB; embedded store when unset")
    database: str = Field("medbridge", description="MongoDB database name")
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0, description="largest accepted HTTP body")
    fhir_body_workers: int = Field(
        1, ge=0, le=8, description="processes that parse and validate large FHIR bodies (0: inline)"
    )
    fhir_body_worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="how much lower the body workers' CPU priority is than the server's "
        "(nice increment; 0: the same)",
    )
    body_object_bytes: int = Field(
        128 * 1024,
        ge=0,
        description="stored FHIR bodies and HL7 messages from this size live in the object "
        "store, the database keeping a reference (0: all inline; docs/limits.md)",
    )
    public_base_url: str | None = Field(
        None,
        description="scheme://host[:port] every absolute URL is built from (Location, links, "
        "fullUrl, RetrieveURL); default http://--host:--http-port; never the Host header",
    )
    cors_origins: str = Field(
        "",
        description="comma-separated origins (https://app.example) allowed cross-origin "
        "requests; none by default: the viewer and portal are same-origin",
    )
    log_level: str = Field("info")
    serialize_writes: bool = Field(
        True,
        description="serialize MongoDB writes in this process; needed by the embedded store, "
        "whose transactions are not isolated; false for a real MongoDB replica set",
    )
    # DICOM archive (docs/dicom.md)
    dicom_replace_different: bool = Field(
        False, description="same SOP Instance UID with other bytes: replace (old kept) or refuse"
    )
    dicom_max_instance_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="largest DICOM instance (and inflated size) accepted"
    )
    # DICOM archive integrity (docs/dicom.md "Upkeep", "Header checks"; docs/limits.md)
    dicom_upkeep_retry_seconds: float = Field(
        2.0, gt=0, description="delay before retrying a failed ImagingStudy upkeep (doubles)"
    )
    dicom_upkeep_retry_max_seconds: float = Field(300.0, gt=0, description="longest retry delay")
    dicom_upkeep_max_attempts: int = Field(
        8, ge=1, description="failed upkeep attempts before a study is parked"
    )
    dicom_quarantine_prefix_bytes: int = Field(
        1024 * 1024, ge=0, description="bytes of an over-size instance kept in quarantine"
    )

    def upkeep_retry(self) -> RetryPolicy:
        return RetryPolicy(
            self.dicom_upkeep_retry_seconds,
            self.dicom_upkeep_retry_max_seconds,
            self.dicom_upkeep_max_attempts,
        )

    s3_bucket: str | None = Field(None, description="S3-compatible bucket for DICOM objects")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, Ceph, ...)")
    s3_prefix: str = Field("", description="key prefix inside the bucket")
    s3_region: str | None = Field(None, description="S3 region; credentials from AWS_* variables")
    # HL7 v2 / MLLP (docs/hl7.md)
    mllp_max_message_bytes: int = Field(10 * 1024 * 1024, gt=0, description="larger -> AR")
    mllp_max_connections: int = Field(200, gt=0, description="at the cap, longest idle is closed")
    mllp_idle_timeout: float = Field(300.0, gt=0, description="seconds between frames")
    mllp_read_timeout: float = Field(30.0, gt=0, description="seconds between reads in a frame")
    mllp_frame_deadline: float = Field(60.0, gt=0, description="seconds to receive one frame")
    mllp_tls_cert: Path | None = Field(None, description="PEM certificate: MLLP over TLS")
    mllp_tls_key: Path | None = Field(None, description="PEM private key of mllp_tls_cert")
    mllp_tls_client_ca: Path | None = Field(None, description="require client certs from this CA")
    hl7_timezone: str = Field("UTC", description="zone of HL7 times sent without an offset")
    hl7_adt_demographics: bool = Field(
        True, description="only ADT changes a Patient's values; other PIDs fill what is missing"
    )
    hl7_authorities: Path | None = Field(None, description="YAML: assigning authority -> system")
    hl7_honor_no_ack: bool = Field(False, description="MSH-15/16 NE: send no ACK at all")
    hl7_order_domains: str = Field(
        "", description="NAME=SENDER,SENDER;... senders sharing placer/filler numbers"
    )

    dicom_ae_title: str = Field("MEDBRIDGE", min_length=1, max_length=16, description="our AE")
    dicom_peers_file: Path | None = Field(
        None, description="YAML/JSON peers table: ae_title, host, port, services"
    )
    dicom_open: bool | None = Field(
        None,
        description="accept calling AE titles missing from the peers table; unset: open on "
        "a loopback address only (a server bound elsewhere refuses to start unless it is "
        "set true, `serve --dicom-open`, or false)",
    )
    dicom_max_associations: int = Field(16, ge=1, le=1000)
    dicom_reserved_associations: int = Field(
        4, ge=0, le=1000, description="association slots only AE titles in the peers table get"
    )
    dicom_idle_timeout: float = Field(
        300.0, gt=0, description="seconds without a request other than C-ECHO: A-ABORT"
    )
    dicom_request_timeout: float = Field(
        5.0, gt=0, description="seconds a new connection has to send its A-ASSOCIATE-RQ"
    )
    dicom_acse_timeout: float = Field(30.0, gt=0)
    dicom_dimse_timeout: float = Field(60.0, gt=0)
    dicom_network_timeout: float = Field(60.0, gt=0)
    dicom_default_issuer: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="IssuerOfPatientID assumed for instances without one (STOW-RS, imports, "
        "C-STORE from AE titles without an `issuer` in the peers table)",
    )

    # SMART-on-FHIR enforcement (docs/smart.md "Enforcement")
    auth: bool = Field(
        True,
        description="require a bearer access token on the FHIR and DICOMweb routes; off "
        "(`serve --no-auth`) only on a loopback address",
    )
    auth_issuer: str | None = Field(
        None, description="`iss` accepted in access tokens (an OpenID Connect issuer URL)"
    )
    auth_jwks: str | None = Field(
        None,
        description="the issuer's JWKS: a file path or an http(s) URL; default: `jwks_uri` "
        "of the issuer's OpenID Connect discovery document",
    )
    auth_audience: str | None = Field(
        None, description="`aud` access tokens must name; default this server's FHIR base URL"
    )
    auth_algorithms: str = Field(
        "RS256,RS384,ES256,ES384", description="JWS algorithms accepted (never none or HS*)"
    )
    auth_leeway_seconds: int = Field(60, ge=0, le=600, description="clock skew allowed")
    auth_jwks_refresh_seconds: float = Field(
        10.0,
        ge=1,
        le=3600,
        description="least time between two fetches of a remote JWKS that unknown kids "
        "ask for, and between a failed fetch and the next try",
    )
    auth_jwks_max_age_seconds: float = Field(
        300.0, ge=10, le=86400, description="a remote JWKS older than this is fetched again"
    )
    auth_scope_claim: str = Field("scope", description="claim carrying the granted scopes")
    auth_fhir_user_claim: str = Field("fhirUser", description="claim naming the FHIR user")
    auth_patient_claim: str = Field("patient", description="claim naming the launch patient")

    # Transport security and peer authentication (docs/smart.md "Transport security")
    tls_cert: Path | None = Field(None, description="PEM certificate (chain): HTTPS, TLS 1.2+")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    dicom_tls_cert: Path | None = Field(None, description="PEM certificate: DICOM TLS, 1.2+")
    dicom_tls_key: Path | None = Field(None, description="PEM private key of dicom_tls_cert")
    dicom_tls_client_ca: Path | None = Field(
        None,
        description="require DICOM client certificates from this CA, each bound to the "
        "calling AE titles whose peers-table row names its subject CN (`certificate_cn`)",
    )
    mllp_allowed_peers: str = Field(
        "",
        description="comma-separated MLLP peers: addresses, CIDR networks, `cn:NAME` (a "
        "TLS client certificate's subject CN); empty: every peer (see mllp_open)",
    )
    mllp_open: bool | None = Field(
        None,
        description="accept MLLP peers without an allowed-peers list; unset: only on a "
        "loopback address (elsewhere the server refuses to start, `serve --mllp-open`)",
    )

    extra_hooks: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="`module:function` returning HookSpecs that compose registers beside "
        "the built-in hooks (site consent or authorization; the integration tests' hooks)",
    )

    # The audit trail (docs/audit.md)
    audit: bool = Field(
        True,
        description="write an AuditEvent for every access (fail closed); false only for "
        "benchmarks that measure what the audit costs",
    )
    audit_mongodb_uri: str | None = Field(
        None, description="MongoDB the AuditEvents and their chain go to; the main store when unset"
    )
    audit_database: str | None = Field(
        None, description="database of the audit store; --database when unset"
    )
    audit_source: str | None = Field(
        None, description="AuditEvent.source.observer of this server; the host name when unset"
    )
    # The audit sink: every AuditEvent also to a syslog collector (docs/audit.md "Syslog sink")
    audit_syslog: str | None = Field(
        None,
        description="tls://host:port of the syslog collector (RFC 5424 over TLS, IHE ATNA); "
        "tcp://host:port to a loopback collector only; unset: no sink",
    )
    audit_syslog_ca: Path | None = Field(
        None, description="PEM CA the collector's certificate must chain to; the system's if unset"
    )
    audit_syslog_cert: Path | None = Field(
        None, description="PEM client certificate this server shows the collector (ATNA node)"
    )
    audit_syslog_key: Path | None = Field(None, description="PEM private key of audit_syslog_cert")
    audit_syslog_app_name: str = Field(
        "medbridge", description="RFC 5424 APP-NAME: 1-48 printable US-ASCII characters"
    )
    audit_syslog_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="seconds between looks for events not yet sent"
    )
    audit_syslog_retry_max_seconds: float = Field(
        30.0, gt=0, le=600, description="longest wait between tries to reach the collector"
    )

    # SMART-on-FHIR authorization server (docs/smart.md)
    smart_signing_algorithm: str = Field(
        "RS384", pattern=r"^(RS384|ES384)$", description="algorithm of a newly made signing key"
    )
    smart_token_lifetime: int = Field(3600, gt=0, le=86_400, description="access token seconds")
    smart_backend_token_lifetime: int = Field(
        300, gt=0, le=300, description="backend-services (client_credentials) token seconds"
    )
    smart_refresh_lifetime: int = Field(
        30 * 24 * 3600, gt=0, description="refresh token seconds (rotated on every use)"
    )
    smart_clock_skew: int = Field(30, ge=0, le=300, description="seconds of skew on exp/iat")
    smart_lockout_failures: int = Field(
        5, ge=1, description="failed sign-ins in a row that lock an account"
    )
    smart_lockout_minutes: float = Field(15.0, gt=0, description="how long a lockout lasts")
    smart_launch_lifetime: int = Field(
        300, gt=0, le=3600, description="seconds an EHR launch value may be used (once)"
    )

    def authority_options(self) -> AuthorityOptions:
        return AuthorityOptions(
            signing_algorithm=self.smart_signing_algorithm,
            token_lifetime=self.smart_token_lifetime,
            backend_token_lifetime=self.smart_backend_token_lifetime,
            refresh_lifetime=self.smart_refresh_lifetime,
            clock_skew=self.smart_clock_skew,
            lockout_failures=self.smart_lockout_failures,
            lockout_minutes=self.smart_lockout_minutes,
            launch_lifetime=self.smart_launch_lifetime,
        )

    # --- the image viewer (viewer/, docs/viewer.md) ------------------------------------
    viewer: bool = Field(True, description="serve the OHIF image viewer at /viewer/")
    viewer_dist: Path | None = Field(
        None,
        description="dist/ folder of an installed @ohif/app; default: the one ./run "
        "installs (.viewer/node_modules/@ohif/app/dist)",
    )
    viewer_client_id: str = Field(
        "medbridge-viewer", description="the viewer's public client id (registered at start)"
    )

    # --- consent engine (consent/, docs/consent.md) ---------------------------------
    consent: bool = Field(
        True, description="decide what signed-in users see by the patients' Consents (auth on)"
    )
    consent_care_relationship_required: bool = Field(
        False,
        description="rule 1: only clinicians with a care relationship see a patient's records "
        "(off: every clinician, as before the engine; hiding and overrides hold either way)",
    )
    consent_unhideable_categories: str = Field(
        "", description="comma-separated categories a patient may not hide (code or system|code)"
    )
    consent_expertise_purpose: str = Field(
        "HLEGAL", pattern=r"^[A-Za-z0-9._-]+$", description="purpose of legal/medical expertise"
    )
    consent_adult_age: int = Field(16, ge=0, le=30, description="age from which rule 2 holds")

    def consent_policy(self) -> Policy:
        unhideable = {c.strip() for c in self.consent_unhideable_categories.split(",")}
        return Policy(
            expertise_purpose=self.consent_expertise_purpose,
            unhideable_categories=frozenset(unhideable - {""}),
            adult_age=self.consent_adult_age,
            care_relationship_required=self.consent_care_relationship_required,
        )

    # --- end consent engine --------------------------------------------------------

    # The patient portal (portal/, docs/portal.md)
    portal: bool = Field(True, description="serve the patient portal at /portal")
    portal_session_minutes: float = Field(
        30.0, gt=0, le=24 * 60, description="a portal session ends this long after its last use"
    )
    portal_page_size: int = Field(
        50, ge=1, le=500, description="records of each type on one timeline page"
    )

    # The work budget of one request (access/budget.py, docs/limits.md)
    limit_string_bytes: int = Field(1024 * 1024, gt=0, description="one FHIR string (R4: 1 MB)")
    limit_resource_bytes: int = Field(12 * 1024 * 1024, gt=0, description="one FHIR resource")
    limit_json_depth: int = Field(64, gt=0, description="nesting of a JSON body")
    limit_list_items: int = Field(10_000, gt=0, description="items of one JSON array in a body")
    limit_bundle_entries: int = Field(2_000, gt=0, description="entries of a batch/transaction")
    limit_patch_operations: int = Field(1_000, gt=0, description="operations of a JSON Patch")
    limit_search_values: int = Field(1_000, gt=0, description="comma-separated values")
    limit_search_value_chars: int = Field(1_024, gt=0, description="one search value")
    limit_wildcard_chars: int = Field(256, gt=0, description="one DICOM wildcard value")
    limit_frames_per_request: int = Field(1_000, gt=0, description="frames named by one WADO")
    limit_multipart_parts: int = Field(10_000, gt=0, description="parts of a STOW body")
    limit_response_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="largest response built in memory"
    )
    limit_header_bytes: int = Field(64 * 1024, gt=0, description="HTTP request head")
    http_header_timeout: float = Field(10.0, gt=0, description="seconds to send a request head")
    http_keepalive_timeout: float = Field(15.0, gt=0, description="idle keep-alive seconds")

    def budget(self) -> Budget:
        return Budget(
            max_string_bytes=self.limit_string_bytes,
            max_resource_bytes=self.limit_resource_bytes,
            max_json_depth=self.limit_json_depth,
            max_list_items=self.limit_list_items,
            max_bundle_entries=self.limit_bundle_entries,
            max_patch_operations=self.limit_patch_operations,
            max_search_values=self.limit_search_values,
            max_search_value_chars=self.limit_search_value_chars,
            max_wildcard_chars=self.limit_wildcard_chars,
            max_frames_per_request=self.limit_frames_per_request,
            max_multipart_parts=self.limit_multipart_parts,
            max_response_bytes=self.limit_response_bytes,
            max_header_bytes=self.limit_header_bytes,
            http_header_timeout=self.http_header_timeout,
            http_keepalive_timeout=self.http_keepalive_timeout,
        )

    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @field_validator("hl7_order_domains")
    @classmethod
    def _order_domains(cls, value: str) -> str:
        parse_order_domains(value)  # a malformed list stops the start with its reason
        return value

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def mongo_dir(self) -> Path:
        return self.data_dir / "mongo"
