"""Who may push and read what: rules, readers, sensitive data, signing, transport and keys."""
