//! The embedded DNS server. Nothing here yet: it arrives with the DNS issue (#8).
