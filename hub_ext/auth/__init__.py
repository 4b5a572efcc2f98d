"""Accounts and sign-in, without pages: username and password rules, password hashing, login throttling."""
