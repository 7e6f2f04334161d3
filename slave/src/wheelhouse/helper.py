"""pyti's wheelhouse helper: download package files and read sdist metadata, never running them.

Run by the slave as `python3 -I -S helper.py COMMAND` with one JSON request on stdin; prints one
JSON object on stdout. Only the standard library is used (no site-packages: -S), and archives are
read member by member, never extracted, so nothing inside a package is ever executed.

  fetch:   {"files": [{"url", "dest", "max_bytes"}], "timeout_secs", "parallel"}
            -> {"results": [{"size"} | {"failed": {"kind", "message"}}]}
  inspect: {"path", "format": "tar"|"zip", "max_member_bytes"}
            -> {"build_requires": [...] | null, "metadata_version", "dynamic": [...]}
  sdists:  {"index_url", "name", "timeout_secs", "max_bytes"} -> {"files": [{"filename", "url",
            "sha256", "size", "yanked"}]}  (the sdists of a project, from the PEP 691 JSON API)
"""

import json
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile


def fail(kind, message):
    json.dump({"error": {"kind": kind, "message": str(message)[:2000]}}, sys.stdout)
    sys.exit(1)


class Failure(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def fetch_one(url, dest, limit, timeout):
    size = 0
    req = urllib.request.Request(url, headers={"User-Agent": "pyti-slave"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise Failure("too_large", f"{length} bytes announced, limit {limit}")
            with open(dest, "xb") as out:
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise Failure("too_large", f"more than {limit} bytes")
                    out.write(chunk)
    except urllib.error.HTTPError as error:
        raise Failure("http", f"HTTP {error.code} {error.reason}")
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise Failure("network", str(error))
    return size


def fetch(request):
    """Downloads every file, a few at a time; one result (size or error) per file, in order."""
    import concurrent.futures

    timeout = float(request["timeout_secs"])

    def one(item):
        try:
            return {"size": fetch_one(item["url"], item["dest"], int(item["max_bytes"]), timeout)}
        except Failure as failure:
            return {"failed": {"kind": failure.kind, "message": str(failure)[:2000]}}

    workers = max(1, min(int(request["parallel"]), len(request["files"]) or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, request["files"]))
    json.dump({"results": results}, sys.stdout)


def read_members(path, archive_format, wanted, limit):
    """Returns {name: bytes} for the wanted top-level-directory files of an sdist."""
    found = {}
    if archive_format == "zip":
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                parts = info.filename.split("/")
                if len(parts) == 2 and parts[1] in wanted and parts[1] not in found:
                    if info.file_size > limit:
                        fail("invalid", f"{info.filename} is larger than {limit} bytes")
                    found[parts[1]] = archive.read(info)
    else:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] in wanted and parts[1] not in found:
                    if not member.isfile() or member.size > limit:
                        fail("invalid", f"{member.name} is not a small regular file")
                    found[parts[1]] = archive.extractfile(member).read()
    return found


def inspect(request):
    try:
        members = read_members(
            request["path"],
            request["format"],
            {"PKG-INFO", "pyproject.toml"},
            int(request["max_member_bytes"]),
        )
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        fail("invalid", f"cannot read the sdist: {error}")
    metadata_version = None
    dynamic = []
    if "PKG-INFO" in members:
        text = members["PKG-INFO"].decode("utf-8", "replace")
        for line in text.split("\n"):
            if not line.strip():
                break  # the body (long description) starts after the first blank line
            key, _, value = line.partition(":")
            if key.lower() == "metadata-version":
                metadata_version = value.strip()
            elif key.lower() == "dynamic":
                dynamic.append(value.strip())
    build_requires = None
    if "pyproject.toml" in members:
        import tomllib

        try:
            pyproject = tomllib.loads(members["pyproject.toml"].decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            fail("invalid", f"pyproject.toml is not valid TOML: {error}")
        system = pyproject.get("build-system")
        if isinstance(system, dict) and isinstance(system.get("requires"), list):
            build_requires = [str(r) for r in system["requires"]]
    json.dump(
        {
            "build_requires": build_requires,
            "metadata_version": metadata_version,
            "dynamic": dynamic,
        },
        sys.stdout,
    )


def sdists(request):
    page = request["index_url"].rstrip("/") + "/" + request["name"] + "/"
    req = urllib.request.Request(
        page,
        headers={"User-Agent": "pyti-slave", "Accept": "application/vnd.pypi.simple.v1+json"},
    )
    limit = int(request["max_bytes"])
    try:
        with urllib.request.urlopen(req, timeout=float(request["timeout_secs"])) as response:
            body = response.read(limit + 1)
            content_type = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        fail("http", f"HTTP {error.code} {error.reason} for {page}")
    except (urllib.error.URLError, OSError, ValueError) as error:
        fail("network", error)
    if len(body) > limit:
        fail("too_large", f"the index page {page} is larger than {limit} bytes")
    if "json" not in content_type:
        fail("invalid", f"the index at {page} does not serve the PEP 691 JSON API")
    try:
        project = json.loads(body)
    except ValueError as error:
        fail("invalid", f"the index page {page} is not valid JSON: {error}")
    files = []
    for entry in project.get("files", []):
        if not isinstance(entry, dict):
            continue
        filename = str(entry.get("filename", ""))
        if not (filename.endswith(".tar.gz") or filename.endswith(".zip")):
            continue
        hashes = entry.get("hashes") if isinstance(entry.get("hashes"), dict) else {}
        size = entry.get("size")
        files.append(
            {
                "filename": filename,
                "url": urllib.parse.urljoin(page, str(entry.get("url", ""))),
                "sha256": hashes.get("sha256"),
                "size": size if isinstance(size, int) else None,
                "yanked": bool(entry.get("yanked")),
            }
        )
    json.dump({"files": files}, sys.stdout)


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    request = json.load(sys.stdin)
    if command == "fetch":
        fetch(request)
    elif command == "inspect":
        inspect(request)
    elif command == "sdists":
        sdists(request)
    else:
        fail("usage", f"unknown command {command!r}")


main()
