"""The server's users (``_users``) as the operator's tools change them.

Devices (provision) and operators (``operator add|remove``) are CouchDB users
that the tools create or give roles; this is the one place that knows the
document's form and how roles are added without dropping any.
"""
USERS_DB = "_users"
USER_PREFIX = "org.couchdb.user:"


def user_id(name):
    return USER_PREFIX + name


def merged_roles(have, wanted):
    """``have`` plus the roles of ``wanted`` it lacks, in order; and those added."""
    have = list(have or [])
    added = [role for role in wanted if role not in have]
    return have + added, added


def with_roles(doc, name, roles):
    """The user document ``doc`` (a new one for ``name`` when None) holding
    ``roles`` as well as its own; returns (document, the roles added)."""
    if doc is None:
        doc = {"_id": user_id(name), "name": name, "type": "user", "roles": []}
    doc["roles"], added = merged_roles(doc.get("roles"), roles)
    return doc, added
