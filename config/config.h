/* config.h - the YAML configuration of SPEC §3 as typed, validated structs.
 *
 * config_load() parses with libyaml, fills every default, resolves names
 * (pools, TLS contexts, backend host names) and validates. On error it
 * writes "FILE:LINE:COLUMN: message" (1-based line and column of the
 * offending node) to err, one line per error (up to 20, each mistake that
 * does not follow from an earlier one; lines separated by '\n', none after
 * the last), and returns NULL. The returned tree is immutable
 * and owned by the caller: config_free() releases all of it. Workers share
 * one tree read-only; a reload builds a new one.
 */
#ifndef MXLB_CONFIG_H
#define MXLB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

/* The size of err for config_load(): room for every error one run reports. */
#define CFG_ERR_MAX 8192

enum cfg_tls_kind { CFG_TLS_NONE, CFG_TLS_STARTTLS, CFG_TLS_IMPLICIT };
enum cfg_tls_mode { CFG_TLS_TERMINATE, CFG_TLS_PASSTHROUGH };
enum cfg_handoff {
	CFG_HANDOFF_NONE,
	CFG_HANDOFF_PROXY_V1,
	CFG_HANDOFF_PROXY_V2,
	CFG_HANDOFF_XCLIENT
};
enum cfg_balance {
	CFG_BAL_ROUNDROBIN,
	CFG_BAL_LEASTCONN,
	CFG_BAL_SOURCE,
	CFG_BAL_EHLO,
	CFG_BAL_RANDOM
};
enum cfg_check { CFG_CHECK_SMTP, CFG_CHECK_TCP, CFG_CHECK_NONE };
enum cfg_relay { CFG_RELAY_AUTO, CFG_RELAY_COPY, CFG_RELAY_SPLICE };
enum cfg_log_level { CFG_LOG_ERROR, CFG_LOG_WARN, CFG_LOG_INFO, CFG_LOG_DEBUG };
enum cfg_log_format { CFG_LOG_TEXT, CFG_LOG_JSON };
enum cfg_screen_action { CFG_SCREEN_ENFORCE, CFG_SCREEN_DROP, CFG_SCREEN_IGNORE };
enum cfg_bare_newline { CFG_BARE_PASS, CFG_BARE_NORMALIZE, CFG_BARE_REJECT };

/* alert events, a bit mask */
#define CFG_EV_BACKEND_DOWN 0x1u
#define CFG_EV_BACKEND_UP 0x2u
#define CFG_EV_POOL_DOWN 0x4u

/* A socket address with the text it was written as ("127.0.0.1:25"). Only
 * server.admin.listen may also be a unix socket ("unix:/run/mxlb/admin.sock":
 * ss holds a struct sockaddr_un, host is ""). */
struct cfg_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[280];
	char host[256];	       /* host part as written, without brackets */
	unsigned line, column; /* where the file has it; 0 when not from a file */
};

struct cfg_cidr {
	int family;	  /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network order, masked to prefix */
	unsigned prefix;
};

struct cfg_tls_cert {
	char *cert;
	char *key;
};

struct cfg_tls {
	char *name;
	struct cfg_tls_cert *certs;
	size_t ncerts;
	unsigned min_version; /* 0x0303 for "1.2", 0x0304 for "1.3" */
	char *ciphers;	      /* "" = library default */
	bool session_tickets;
	char *ca; /* NULL when not given */
	bool verify;
	char *server_name; /* "" = backend host name */
	int line, column;
};

struct cfg_pool;

struct cfg_route {
	char *ehlo; /* fnmatch pattern, NULL = any */
	bool has_client;
	struct cfg_cidr client;
	char *sni; /* NULL = any */
	struct cfg_pool *pool;
};

struct cfg_timeouts { /* all in milliseconds */
	uint32_t proxy_header, tls_handshake, command, connect, backend_reply, idle;
};

/* A DNSBL/DNSWL site of screen.dnsbl.sites, postscreen's syntax
 * domain[=filter]*weight. The filter is one pattern per octet of the
 * answer (127.0.0.[2..4], [2;4], a number): octet i matches value v when
 * bit v of filter[i] is set. Without a filter any answer matches. */
struct cfg_dnsbl_site {
	char *text; /* as written, for logs and the RCPT reply */
	char *domain;
	bool has_filter;
	uint8_t filter[4][32];
	int weight;
};

/* listeners[].screen (SPEC §9); enabled when any test or list is set. */
struct cfg_screen {
	bool enabled;
	struct cfg_cidr *allow, *deny;
	size_t nallow, ndeny;
	uint32_t pregreet; /* ms; 0 = no pregreet test */
	struct cfg_dnsbl_site *sites;
	size_t nsites;
	int threshold;		/* the score that fails the client */
	uint32_t dnsbl_timeout; /* ms */
	enum cfg_screen_action action;
	uint32_t cache; /* ms a passed client skips the tests; 0 = no cache */
};

/* listeners[].limits (SPEC §9) */
struct cfg_limits {
	uint32_t rate_count;  /* new sessions per client key ... */
	uint32_t rate_window; /* ... in this many ms; 0 = no rate limit */
	uint8_t ipv4_prefix, ipv6_prefix;
};

struct cfg_listener {
	char *name;
	struct cfg_addr *listen;
	size_t nlisten;
	enum cfg_tls_kind tls;
	struct cfg_tls *tls_context; /* NULL when none */
	enum cfg_tls_mode tls_mode;
	bool require_tls;
	bool accept_proxy;
	char *banner;
	struct cfg_pool *pool;
	struct cfg_route *routes;
	size_t nroutes;
	uint32_t max_sessions_per_client;
	enum cfg_relay relay;
	struct cfg_timeouts timeouts;
	struct cfg_screen screen;
	struct cfg_limits limits;
	enum cfg_bare_newline bare_newline;
};

struct cfg_backend {
	char *name;
	struct cfg_addr address; /* resolved at load */
	uint32_t weight;
	uint32_t max_sessions;
	bool backup;
	enum cfg_tls_kind tls;
	struct cfg_tls *tls_context; /* NULL when none */
	enum cfg_handoff handoff;    /* the pool's unless set on the backend */
};

struct cfg_health {
	enum cfg_check check;
	uint32_t interval, timeout; /* ms */
	uint32_t rise, fall;
	char *ehlo; /* never NULL: server.hostname when "" */
};

/* pools[].reuse (SPEC §10) */
struct cfg_reuse {
	uint32_t max_idle;     /* per backend and worker; 0 = no reuse */
	uint32_t idle_timeout; /* ms */
	uint32_t max_uses;
};

struct cfg_pool {
	char *name;
	enum cfg_balance balance;
	uint32_t retries;
	enum cfg_handoff handoff;
	struct cfg_health health;
	struct cfg_reuse reuse;
	struct cfg_backend *backends;
	size_t nbackends;
	size_t index; /* position in config.pools */
};

struct cfg_alerts {
	bool enabled; /* the section is present */
	struct cfg_addr smtp;
	char *from;
	char **to;
	size_t nto;
	unsigned events; /* CFG_EV_* */
};

struct cfg_server {
	char *hostname;
	uint32_t workers; /* resolved: 0 became the CPU count */
	char *user;	  /* "" = none */
	uint32_t max_sessions;
	uint32_t shutdown_timeout; /* ms */
	enum cfg_log_level log_level;
	enum cfg_log_format log_format;
	bool has_admin;
	struct cfg_addr admin;		   /* TCP or AF_UNIX; never a listener's address */
	char *admin_token;		   /* "" = none: POSTs over TCP are refused */
	unsigned admin_line, admin_column; /* of server.admin.listen; 0 = the default */
	bool has_resolver;		   /* server.resolver given: else /etc/resolv.conf */
	struct cfg_addr resolver;	   /* port 53 unless written */
};

struct config {
	char *path;
	struct cfg_server server;
	struct cfg_tls *tls;
	size_t ntls;
	struct cfg_listener *listeners;
	size_t nlisteners;
	struct cfg_pool *pools;
	size_t npools;
	struct cfg_alerts alerts;
	/* What is valid but likely a mistake, "FILE:LINE:COLUMN: warning: ..."
	 * lines ending in '\n' ("" when none): for --check and the log. */
	char *warnings;
};

/* Load and validate FILE. NULL and err filled on any error. */
struct config *config_load(const char *path, char *err, size_t errlen);

/* The same from memory; name is used as FILE in error messages. */
struct config *config_load_buffer(const char *name, const char *text, size_t len, char *err,
				  size_t errlen);

void config_free(struct config *cfg);

/* cfg as YAML that loads again, every default filled in (mxlb --dump);
 * server.admin.token is never printed (dump.c). */
void config_dump(FILE *f, const struct config *cfg);

/* Parsers shared with the rest of mxlb; each returns 0 or -1. */
int config_parse_duration(const char *s, uint32_t *ms);
int config_parse_size(const char *s, uint64_t *bytes);
int config_parse_addr(const char *s, struct cfg_addr *out); /* resolves names */
int config_parse_cidr(const char *s, struct cfg_cidr *out);
/* A DNSBL site (domain[=filter][*weight]); 0, or -1 when malformed. Its
 * strings are the caller's to free. */
int config_parse_dnsbl_site(const char *s, struct cfg_dnsbl_site *out);
/* Whether the A record a (network order) of a listing matches the site's
 * filter. */
bool config_dnsbl_match(const struct cfg_dnsbl_site *site, const uint8_t a[4]);
bool config_cidr_match(const struct cfg_cidr *c, const struct sockaddr *sa);

/* A loopback address (127.0.0.0/8, ::1) or a unix socket: reachable from
 * this host only. */
bool config_addr_is_local(const struct cfg_addr *a);
/* Two TCP addresses that different owners cannot both listen on: one port
 * and family, and one host or either of them the wildcard. */
bool config_addr_overlap(const struct cfg_addr *a, const struct cfg_addr *b);
/* 0.0.0.0 or ::, any port. */
bool config_addr_wildcard(const struct sockaddr_storage *ss);

const char *config_handoff_name(enum cfg_handoff h);

/* Refuse host names other than localhost instead of resolving them
 * (for fuzzing: no DNS lookups). */
void config_set_resolver_offline(bool offline);

#endif
