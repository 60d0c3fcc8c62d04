"""The user lifecycle: onboard new users, forget a user, audit what remains of one."""
