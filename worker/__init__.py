"""cardshare: shares each business line's iMessage contact card into its chats once a day."""
