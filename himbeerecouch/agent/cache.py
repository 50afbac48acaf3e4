"""The last known documents of this device, kept in the state folder.

When the server cannot be reached at start, the supervisor runs what it ran
last time.  The file is replaced atomically (write, fsync, rename), so a
crash or a full disk leaves the previous version; a file that cannot be read
back is reported and ignored: the server rebuilds it.
"""
import json
import logging
import os
import tempfile

log = logging.getLogger("himbeerecouch.cache")

VERSION = 1


def cache_path(state_dir, macid):
    return os.path.join(state_dir, "documents-%d.json" % macid)


def save(path, macid, database, docs):
    """Write ``docs``; returns False (and logs why) when it cannot."""
    data = {"version": VERSION, "macid": macid, "database": database, "docs": docs}
    return write_json(path, data, "the document cache")


def write_json(path, data, what):
    """Replace the JSON file ``path`` atomically; False (and logs why) when it cannot."""
    folder = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".documents-", suffix=".tmp")
    except OSError as e:
        log.error("cannot write %s in %s: %s", what, folder, e.strerror or e)
        return False
    done = False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        done = True
        sync_folder(folder)
        return True
    except (OSError, ValueError, TypeError) as e:
        # TypeError: something in docs is not JSON (json.dump fails half-way).
        log.error("cannot write %s %s: %s", what, path,
                  getattr(e, "strerror", None) or e)
        return False
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def sync_folder(folder):
    """Make the rename itself survive a power cut (the Pi's SD card)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path, macid, database):
    """The cached ``{doc_id: doc}``, or None when there is no usable cache."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("document cache %s is unreadable (%s); it will be rebuilt from the server",
                    path, e)
        return None
    if (not isinstance(data, dict) or data.get("version") != VERSION
            or data.get("macid") != macid or data.get("database") != database
            or not isinstance(data.get("docs"), dict)):
        log.warning("document cache %s is not for this device and database; ignored", path)
        return None
    docs = {k: v for k, v in data["docs"].items() if isinstance(v, dict) and v.get("_id") == k}
    return docs
