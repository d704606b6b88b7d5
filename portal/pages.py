"""The portal's pages: my record, hide or show, research use, who opened my records,
and the images and PDFs they link to. Everything shown is read through the FHIR and
DICOMweb doors with the signed-in person's token, at the moment the page is asked for."""

from __future__ import annotations

import base64
import logging
import re
from datetime import date
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from portal import consents, responses
from portal.access_log import openings
from portal.api import Answer
from portal.app import PATH, Endpoint, PortalCore, Visit
from portal.record import birth_date, birthday, name_of, read_record, table

log = logging.getLogger(__name__)
REFERENCE = re.compile(r"^(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})$")
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
STUDY_UID = re.compile(r"^[0-9.]{1,64}$")
CATEGORY = re.compile(r"^([!-{}~]{1,200}\|)?[!-{}~]{1,64}$")  # system|code, no spaces
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
RULE_4_WARNING = "MB-1500"


class Portal(PortalCore):
    def routes(self) -> list[tuple[str, Endpoint, list[str]]]:
        return [
            (f"{PATH}/", self.guarded(self.home), ["GET"]),
            (f"{PATH}/login", self.guarded(self.login), ["GET"]),
            (f"{PATH}/callback", self.guarded(self.callback), ["GET"]),
            (f"{PATH}/logout", self.guarded(self.logout), ["POST"]),
            (f"{PATH}/language", self.guarded(self.language), ["GET"]),
            (f"{PATH}/privacy", self.guarded(self.privacy), ["GET"]),
            (f"{PATH}/privacy/hide", self.guarded(self.hide), ["POST"]),
            (f"{PATH}/privacy/show", self.guarded(self.show), ["POST"]),
            (f"{PATH}/research", self.guarded(self.research), ["GET", "POST"]),
            (f"{PATH}/access-log", self.guarded(self.access_log), ["GET"]),
            (f"{PATH}/thumbnail/{{uid}}", self.guarded(self.thumbnail), ["GET"]),
            (f"{PATH}/reports/{{id}}/pdf/{{index:int}}", self.guarded(self.pdf), ["GET"]),
            (f"{PATH}/static/portal.css", self.static, ["GET"]),
        ]

    def guarded(self, endpoint: Endpoint) -> Endpoint:
        """Any failure is a page in the person's language, never a stack trace."""

        async def run(request: Request) -> Response:
            try:
                return await endpoint(request)
            except Exception as error:
                # the page's name, not its path: paths carry record identifiers
                log.error("portal: %s on the %s page", type(error).__name__, endpoint.__name__)
                visit = self.visit(request)
                return self.error(visit, 500, visit.t("error.server", status=500))

        return run

    # -- helpers -----------------------------------------------------------------------

    async def signed_in(self, request: Request) -> Visit | Response:
        """The visit of a signed-in person with a live token, else the welcome page."""
        visit = self.visit(request)
        session = visit.session
        if session is None or not session.signed_in:
            out = request.query_params.get("signed_out")
            notices = [visit.t("welcome.signed_out")] if out else []
            return self.render(visit, "welcome.html", "welcome.title", notices=notices)
        return visit

    async def get(self, visit: Visit, path: str, params: dict[str, str] | None = None) -> Answer:
        """A FHIR read with the session's token, refreshed once when it has expired."""
        assert self.api is not None
        assert visit.session is not None
        answer = await self.api.get(visit.token, path, params)
        if answer.status == 401 and await self.refresh(visit.session):
            answer = await self.api.get(visit.token, path, params)
        return answer

    def ended(self, visit: Visit) -> Response:
        if visit.session is not None:
            self.sessions.end(visit.session)
        response = self.error(visit, 401, visit.t("error.session"))
        return responses.without_session(response, PATH, self.secure)

    async def banner(self, visit: Visit, patient: dict[str, Any]) -> tuple[str, list[str]]:
        """The patient banner and, for a representative, whose records these are and
        when the child's own choices take over (rule 6)."""
        # a representative of an adult may not read the Patient either: its id then
        t, name = visit.t, name_of(patient) or f"Patient/{visit.patient}"
        born = birth_date(patient)
        banner = t("patient.banner", name=name, birth=born.isoformat() if born else "?")
        notices: list[str] = []
        fhir_user = visit.session.fhir_user if visit.session else None
        if fhir_user and fhir_user.startswith("RelatedPerson/"):
            notices.append(t("acting_for", name=name))
            age = self.options.adult_age
            if born is not None and birthday(born, age) > date.today():
                notices.append(t("minor.notice", name=name, age=age,
                                 date=birthday(born, age).isoformat()))  # fmt: skip
            else:
                notices.append(t("minor.adult", name=name, age=age))
        return banner, notices

    # -- my record ---------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        visit = await self.signed_in(request)
        if isinstance(visit, Response):
            return visit
        before = request.query_params.get("before")
        if before is not None and not DAY.match(before[:10]):
            before = None
        assert self.api is not None
        own = await self.get(visit, f"Patient/{visit.patient}")
        if own.status == 401:
            return self.ended(visit)
        size = self.options.page_size
        record = await read_record(self.api, visit.token, visit.patient, size, before)
        banner, notices = await self.banner(visit, own.body)
        problems = [visit.t("error.server", status=s) for s in sorted(set(record.problems))]
        dated = [i.date[:10] for i in record.items if i.date]
        older = min(dated) if len(record.items) >= size and dated else None
        return self.render(
            visit, "record.html", "record.title", items=record.items, banner=banner,
            notices=notices, problems=problems, older=older, may_hide=True,
        )  # fmt: skip

    async def thumbnail(self, request: Request) -> Response:
        visit = self.visit(request)
        uid = request.path_params["uid"]
        session = visit.session
        if session is None or not session.signed_in or not STUDY_UID.match(uid):
            return responses.svg_notice(visit.t("error.session"))
        assert self.api is not None
        status, content, media = await self.api.image(visit.token, f"studies/{uid}/thumbnail")
        if status == 200 and media.split(";")[0].strip() in ("image/jpeg", "image/png"):
            response = Response(content, 200, media_type=media.split(";")[0].strip())
            return responses.secured(response)
        return responses.svg_notice(visit.t("record.no_preview"))

    async def pdf(self, request: Request) -> Response:
        visit = await self.signed_in(request)
        if isinstance(visit, Response):
            return visit
        report_id, index = request.path_params["id"], int(request.path_params["index"])
        if not FHIR_ID.match(report_id):
            return self.error(visit, 404, visit.t("error.not_found"))
        report = await self.get(visit, f"DiagnosticReport/{report_id}")
        forms = report.body.get("presentedForm", []) if report.status == 200 else []
        if not 0 <= index < len(forms) or forms[index].get("contentType") != "application/pdf":
            return self.error(visit, 404, visit.t("error.not_found"))
        data = forms[index].get("data")
        url = str(forms[index].get("url", ""))
        if data is None and "Binary/" in url:
            binary = await self.get(visit, "Binary/" + url.rsplit("Binary/", 1)[1])
            data = binary.body.get("data") if binary.status == 200 else None
        if not isinstance(data, str):
            return self.error(visit, 404, visit.t("error.not_found"))
        content = base64.b64decode(data)
        response = Response(content, 200, media_type="application/pdf")
        response.headers["Content-Disposition"] = f'inline; filename="report-{report_id}.pdf"'
        return responses.secured(response)

    # -- hide or show ------------------------------------------------------------------

    async def patient_consents(self, visit: Visit) -> Answer:
        params = {"patient": f"Patient/{visit.patient}", "status": "active", "_count": "500"}
        return await self.get(visit, "Consent", params)

    async def privacy(self, request: Request) -> Response:
        visit = await self.signed_in(request)
        if isinstance(visit, Response):
            return visit
        assert self.api is not None
        found = await self.patient_consents(visit)
        if found.status == 401:
            return self.ended(visit)
        hidden = []
        for entry in found.body.get("entry", ()):
            consent = entry.get("resource", {})
            if consents.is_hiding(consent):
                key, values = consents.describe(consent)
                hidden.append((str(consent.get("id", "")), visit.t(key, **values)))
        record = await read_record(
            self.api, visit.token, visit.patient, self.options.page_size, None
        )
        notices, problems = self._outcome_notices(visit)
        own = await self.get(visit, f"Patient/{visit.patient}")
        banner, more = await self.banner(visit, own.body)
        return self.render(
            visit, "privacy.html", "privacy.title", hidden=hidden, may_write=True,
            types=table()["hideable_types"], organizations=record.organizations,
            categories=record.categories,
            unhideable=self.options.unhideable, notices=more + notices, problems=problems,
            banner=banner,
        )  # fmt: skip

    def _outcome_notices(self, visit: Visit) -> tuple[list[str], list[str]]:
        """What the last write said, carried in the redirect's query (codes, no data)."""
        query = visit.request.query_params
        notices, problems = [], []
        if query.get("saved"):
            notices.append(visit.t("privacy.saved"))
        if query.get("unhideable"):
            codes = query["unhideable"][:300]
            problems.append(visit.t("privacy.unhideable.warning", codes=codes))
        return notices, problems

    async def hide(self, request: Request) -> Response:
        visit = self.visit(request)
        form = await self.checked_form(visit)
        if isinstance(form, Response):
            return form
        if visit.session is None or not visit.session.signed_in:
            return self.ended(visit)
        consent = self._hiding(visit.patient, form)
        if consent is None:
            return self.error(visit, 400, visit.t("privacy.refused", reason="invalid form"))
        return await self._write(visit, consent, f"{PATH}/privacy")

    def _hiding(self, patient: str, form: dict[str, str]) -> dict[str, Any] | None:
        kind = form.get("kind")
        if kind in ("record", "organization"):
            match = REFERENCE.match(form.get("reference", ""))
            organization = match is not None and match["type"] == "Organization"
            if match is None or organization != (kind == "organization"):
                return None
            return consents.hide_reference(patient, match.group(0))
        category = form.get("category", "")
        if kind == "category" and CATEGORY.match(category):
            return consents.hide_category(patient, category)
        if kind == "type" and form.get("resource_type") in table()["hideable_types"]:
            return consents.hide_type(patient, form["resource_type"])
        start, end = form.get("start", ""), form.get("end", "")
        if kind == "period" and DAY.match(start) and DAY.match(end) and start <= end:
            return consents.hide_period(patient, start, end)
        return None

    async def _write(self, visit: Visit, consent: dict[str, Any], back: str) -> Response:
        assert self.api is not None
        assert visit.session is not None
        answer = await self.api.create(visit.token, consent)
        if answer.status == 401 and await self.refresh(visit.session):
            answer = await self.api.create(visit.token, consent)
        if answer.status == 401:
            return self.ended(visit)
        if answer.status not in (200, 201):
            refused = visit.t("privacy.refused", reason=_reason(answer))
            return self.error(visit, answer.status, refused)
        warned = [
            str(issue.get("diagnostics", "")) for issue in answer.body.get("issue", ())
            if issue.get("severity") == "warning" and RULE_4_WARNING in _codes(issue)
        ]  # fmt: skip
        codes = [c for c in self.options.unhideable if any(c in text for text in warned)]
        suffix = "&unhideable=" + ",".join(codes) if warned else ""
        return responses.redirect(f"{back}?saved=1{suffix}")

    async def show(self, request: Request) -> Response:
        visit = self.visit(request)
        form = await self.checked_form(visit)
        if isinstance(form, Response):
            return form
        if visit.session is None or not visit.session.signed_in:
            return self.ended(visit)
        consent_id = form.get("consent", "")
        if not FHIR_ID.match(consent_id):
            return self.error(visit, 400, visit.t("privacy.refused", reason="invalid form"))
        return await self._delete(visit, [consent_id], f"{PATH}/privacy")

    async def _delete(self, visit: Visit, ids: list[str], back: str) -> Response:
        assert self.api is not None
        for consent_id in ids:
            answer = await self.api.delete(visit.token, f"Consent/{consent_id}")
            if answer.status == 401:
                return self.ended(visit)
            if answer.status not in (200, 204):
                return self.error(visit, answer.status,
                                  visit.t("privacy.refused", reason=_reason(answer)))  # fmt: skip
        return responses.redirect(f"{back}?saved=1")

    # -- research ----------------------------------------------------------------------

    async def research(self, request: Request) -> Response:
        visit = self.visit(request)
        form: dict[str, str] = {}
        if request.method == "POST":
            checked = await self.checked_form(visit)
            if isinstance(checked, Response):
                return checked
            form = checked
        signed = await self.signed_in(request)
        if isinstance(signed, Response):
            return signed
        found = await self.patient_consents(visit)
        if found.status == 401:
            return self.ended(visit)
        refusing = [
            str(e["resource"].get("id")) for e in found.body.get("entry", ())
            if consents.refuses_research(e.get("resource", {}))
        ]  # fmt: skip
        if request.method == "POST":
            if form.get("allow") == "yes":
                return await self._delete(visit, refusing, f"{PATH}/research")
            if refusing:  # refused already: nothing to write
                return responses.redirect(f"{PATH}/research?saved=1")
            refusal = consents.refuse_research(visit.patient)
            return await self._write(visit, refusal, f"{PATH}/research")
        notices, problems = self._outcome_notices(visit)
        own = await self.get(visit, f"Patient/{visit.patient}")
        banner, more = await self.banner(visit, own.body)
        return self.render(
            visit, "research.html", "research.title", refused=bool(refusing), may_write=True,
            notices=more + notices, problems=problems, banner=banner,
        )  # fmt: skip

    # -- who opened my records ---------------------------------------------------------

    async def access_log(self, request: Request) -> Response:
        visit = await self.signed_in(request)
        if isinstance(visit, Response):
            return visit
        params = {"patient": f"Patient/{visit.patient}", "_sort": "-date", "_count": "200"}
        found = await self.get(visit, "AuditEvent", params)
        if found.status == 401:
            return self.ended(visit)
        problems = []
        if found.status != 200:
            problems.append(visit.t("log.unavailable", reason=f"{found.status} {_reason(found)}"))
        own = await self.get(visit, f"Patient/{visit.patient}")
        banner, notices = await self.banner(visit, own.body)
        rows = openings(found.body) if found.status == 200 else []
        return self.render(
            visit, "access_log.html", "log.title", openings=rows, problems=problems,
            notices=notices, banner=banner,
        )  # fmt: skip


def _codes(issue: dict[str, Any]) -> list[str]:
    return [str(c.get("code")) for c in issue.get("details", {}).get("coding", ())]


def _reason(answer: Answer) -> str:
    """The OperationOutcome's first diagnostics (and catalog code), for the person."""
    for issue in answer.body.get("issue", ()):
        code = next((c.get("code") for c in issue.get("details", {}).get("coding", ())), "")
        text = str(issue.get("diagnostics", ""))[:300]
        return f"{text} ({code})" if code else text
    return str(answer.status)
