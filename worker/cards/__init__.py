"""Contact cards for operators (`desk`: validate, write once, count Linq's write budget, refresh
the cache) and the account's CRM contacts (`contacts`, Linq's v2 List Contacts)."""
