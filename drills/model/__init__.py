"""The typed core, with no I/O: playbooks, environments, run requests, records, check results,
durations, the clock's stamps, approvals, secret redaction and the one exception tree."""
