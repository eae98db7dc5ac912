"""Outbound activity in: signed webhooks (`webhooks`), the chat sync (`sync`) and imports
(`importer`), all turned into `rules.facts.ChatActivity` by the pure `payloads` and written
through `store.chats.record_activity`.
"""
