"""Validates kiln's SBOMs with the reference tools, for tests/kiln/sbom.rs.

    sbom_check.py CYCLONEDX.json SPDX.json

Validates the CycloneDX document against the CycloneDX 1.6 JSON schema
(cyclonedx-python-lib), parses and validates the SPDX document
(spdx-tools, as pyspdxtools does), round-trips every purl through
packageurl-python, and prints one JSON object: the packages each document
names (name, version, arch from the purl) and the purls that did not
round-trip. Exits 1 with the problems on stderr when a document is invalid.
"""

import json
import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document


def packages(purls):
    found = []
    bad = []
    for purl in purls:
        parsed = PackageURL.from_string(purl)
        if parsed.to_string() != purl:
            bad.append([purl, parsed.to_string()])
        found.append([parsed.name, parsed.version, (parsed.qualifiers or {}).get("arch", "")])
    return sorted(found), bad


def main():
    cyclonedx_path, spdx_path = sys.argv[1], sys.argv[2]
    problems = []
    with open(cyclonedx_path) as file:
        text = file.read()
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        problems.append(f"CycloneDX: {error}")
    cyclonedx = json.loads(text)
    document = parse_file(spdx_path)
    for message in validate_full_spdx_document(document):
        problems.append(f"SPDX: {message.validation_message}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    spdx_purls = [
        ref.locator
        for package in document.packages
        for ref in package.external_references
        if ref.reference_type == "purl"
    ]
    cdx_packages, cdx_bad = packages([c["purl"] for c in cyclonedx.get("components", [])])
    spdx_packages, spdx_bad = packages(spdx_purls)
    print(json.dumps({
        "cyclonedx": cdx_packages,
        "spdx": spdx_packages,
        "not_round_tripped": cdx_bad + spdx_bad,
    }))


main()
