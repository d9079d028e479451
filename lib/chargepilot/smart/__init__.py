# Smart-charging engine: profiles, K01 checks, composite schedule, SmartConfig.
# Pure computation; imports base only.
