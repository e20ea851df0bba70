/* config.c - see config.h. libyaml's document API gives every node its
 * position, so each error names FILE:LINE:COLUMN of the node at fault.
 * Sections are read in dependency order (server, tls, pools, listeners,
 * alerts) whatever their order in the file, so references resolve as they
 * are read. A first pass over the events refuses aliases and further
 * documents, so the tree that is walked has no shared nodes and no cycles.
 */
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

/*
 * NOT BUILT YET. Values this build parses but cannot act on yet; each is
 * refused at its node with "<what> is not supported yet" instead of being
 * silently ignored. When a feature lands, delete its rows.
 */
static const struct unbuilt {
	const char *key; /* the key as get_enum() names it */
	const char *value;
	const char *what;
} unbuilt[] = {
	{ "relay", "splice", "relay: splice" },
};

#define CFG_FILE_MAX (4 << 20)
#define CFG_DEPTH_MAX 64 /* the schema needs 6; libyaml slows quadratically with depth */
#define CFG_NAME_MAX 128
#define CFG_WORKERS_MAX 64
#define CFG_BANNER_MAX 200
#define CFG_MAILBOX_MAX 254
#define CFG_TOKEN_MIN 16 /* a bearer token that cannot be guessed over HTTP */
#define CFG_TOKEN_MAX 256

struct ctx {
	const char *file;
	yaml_document_t doc;
	char *err;
	size_t errlen;
	struct config *cfg;
};

static bool resolver_offline;

void config_set_resolver_offline(bool offline)
{
	resolver_offline = offline;
}

static int fail(struct ctx *c, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
	char msg[CFG_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errlen, "%s:%zu:%zu: %s", c->file, n ? n->start_mark.line + 1 : 1,
		 n ? n->start_mark.column + 1 : 1, msg);
	return -1;
}

static yaml_node_t *node(struct ctx *c, int id)
{
	return yaml_document_get_node(&c->doc, id);
}

static const char *type_name(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

static const char *scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* n must be of type t; a scalar must also hold no NUL (libyaml allows
 * "\0" escapes), so every scalar read after want() is a whole C string. */
static int want(struct ctx *c, yaml_node_t *n, yaml_node_type_t t, const char *what)
{
	static const char *const names[] = { "", "a scalar", "a list", "a mapping" };

	if (n->type != t)
		return fail(c, n, "%s: expected %s, found %s", what, names[t], type_name(n));
	if (t == YAML_SCALAR_NODE && strlen(scalar(n)) != n->data.scalar.length)
		return fail(c, n, "%s: NUL character not allowed", what);
	return 0;
}

static int get_str(struct ctx *c, yaml_node_t *n, const char *what, char **out)
{
	if (want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	free(*out);
	*out = strdup(scalar(n));
	return *out ? 0 : fail(c, n, "out of memory");
}

static int get_bool(struct ctx *c, yaml_node_t *n, const char *what, bool *out)
{
	const char *s;

	if (want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	s = scalar(n);
	if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on"))
		*out = true;
	else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))
		*out = false;
	else
		return fail(c, n, "%s: expected true or false, found \"%s\"", what, s);
	return 0;
}

/* Decimal digits only: no sign, no space, no 0x. */
static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static int get_u32(struct ctx *c, yaml_node_t *n, const char *what, uint32_t min, uint32_t max,
		   uint32_t *out)
{
	const char *s;
	unsigned long long v;

	if (want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	s = scalar(n);
	errno = 0;
	if (!all_digits(s))
		return fail(c, n, "%s: expected a whole number, found \"%s\"", what, s);
	v = strtoull(s, NULL, 10);
	if (errno || v < min || v > max)
		return fail(c, n, "%s: %s is out of range (%u to %u)", what, s, min, max);
	*out = (uint32_t)v;
	return 0;
}

/* "250ms", "5s", "10m", "1h": digits then exactly one unit; the result
 * must fit in 32 bits of milliseconds (about 49 days). */
int config_parse_duration(const char *s, uint32_t *ms)
{
	unsigned long long v = 0, mul;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (unsigned long long)(*p++ - '0');
		if (v > UINT32_MAX)
			return -1;
	}
	if (!strcmp(p, "ms"))
		mul = 1;
	else if (!strcmp(p, "s"))
		mul = 1000;
	else if (!strcmp(p, "m"))
		mul = 60000;
	else if (!strcmp(p, "h"))
		mul = 3600000;
	else
		return -1;
	if (v * mul > UINT32_MAX)
		return -1;
	*ms = (uint32_t)(v * mul);
	return 0;
}

/* "512", "64k" (or "64K"), "10M", "1G": powers of 1024. */
int config_parse_size(const char *s, uint64_t *bytes)
{
	unsigned long long v = 0, mul = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	while (*p >= '0' && *p <= '9') {
		unsigned d = (unsigned)(*p++ - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (*p == 'k' || *p == 'K')
		mul = 1024;
	else if (*p == 'M')
		mul = 1024 * 1024;
	else if (*p == 'G')
		mul = 1024ull * 1024 * 1024;
	else if (*p)
		return -1;
	if (*p && p[1])
		return -1;
	if (v > UINT64_MAX / mul)
		return -1;
	*bytes = v * mul;
	return 0;
}

static int get_duration(struct ctx *c, yaml_node_t *n, const char *what, uint32_t *ms)
{
	if (want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	if (config_parse_duration(scalar(n), ms) < 0)
		return fail(c, n, "%s: bad duration \"%s\" (use 250ms, 5s, 10m, 1h)", what,
			    scalar(n));
	return 0;
}

/* A value from a fixed list; *out gets its index. */
static int get_enum(struct ctx *c, yaml_node_t *n, const char *what, const char *const *names,
		    int *out)
{
	char allowed[256] = "";

	if (want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	for (int i = 0; names[i]; i++) {
		if (!strcmp(scalar(n), names[i])) {
			*out = i;
			return 0;
		}
		snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed), "%s%s",
			 i ? ", " : "", names[i]);
	}
	return fail(c, n, "%s: \"%s\" is not one of %s", what, scalar(n), allowed);
}

/* The value n (a scalar already read by get_enum() as key) when this build
 * cannot act on it yet: see the table at the top. */
static int refuse_unbuilt(struct ctx *c, yaml_node_t *n, const char *key)
{
	for (size_t i = 0; i < sizeof(unbuilt) / sizeof(unbuilt[0]); i++)
		if (!strcmp(unbuilt[i].key, key) && !strcmp(unbuilt[i].value, scalar(n)))
			return fail(c, n, "%s is not supported yet", unbuilt[i].what);
	return 0;
}

/* Splits "host:port" or "[v6]:port"; host gets the host without brackets.
 * Pure: no resolution. */
static int split_addr(const char *s, char host[256], const char **port)
{
	const char *end;
	size_t hlen;

	if (s[0] == '[') {
		end = strchr(s, ']');
		if (!end || end[1] != ':')
			return -1;
		hlen = (size_t)(end - s - 1);
		s++;
	} else {
		end = strchr(s, ':');
		if (!end || strchr(end + 1, ':'))
			return -1; /* a bare v6 address needs brackets */
		hlen = (size_t)(end - s);
	}
	if (hlen == 0 || hlen >= 256)
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	*port = strchr(end, ':') + 1;
	return 0;
}

int config_parse_addr(const char *s, struct cfg_addr *out)
{
	char host[256];
	const char *port;
	struct addrinfo hints, *res = NULL;
	unsigned long p;

	memset(out, 0, sizeof(*out));
	if (strlen(s) >= sizeof(out->text) || split_addr(s, host, &port) < 0)
		return -1;
	if (!all_digits(port) || strlen(port) > 5 || (p = strtoul(port, NULL, 10)) == 0 ||
	    p > 65535)
		return -1;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	hints.ai_family = s[0] == '[' ? AF_INET6 : AF_UNSPEC;
	if (getaddrinfo(host, port, &hints, &res) != 0) {
		/* a name: never in brackets, and not looked up when offline */
		if (s[0] == '[' || (resolver_offline && strcmp(host, "localhost")))
			return -1;
		hints.ai_flags = AI_NUMERICSERV;
		if (getaddrinfo(host, port, &hints, &res) != 0)
			return -1;
	}
	if (res->ai_addrlen > sizeof(out->ss)) {
		freeaddrinfo(res);
		return -1;
	}
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	snprintf(out->text, sizeof(out->text), "%s", s);
	snprintf(out->host, sizeof(out->host), "%s", host);
	return 0;
}

int config_parse_cidr(const char *s, struct cfg_cidr *out)
{
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned long prefix;

	memset(out, 0, sizeof(*out));
	if (alen == 0 || alen >= sizeof(addr))
		return -1;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = AF_INET;
		prefix = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = AF_INET6;
		prefix = 128;
	} else {
		return -1;
	}
	if (slash) {
		unsigned long max = prefix;

		if (!all_digits(slash + 1) || strlen(slash + 1) > 3)
			return -1;
		prefix = strtoul(slash + 1, NULL, 10);
		if (prefix > max)
			return -1;
	}
	out->prefix = (unsigned)prefix;
	for (unsigned i = 0; i < 16; i++) { /* mask the host bits */
		unsigned keep = prefix > i * 8 ? (prefix - i * 8 >= 8 ? 8 : prefix - i * 8) : 0;

		out->addr[i] &= (uint8_t)(0xff00u >> keep);
	}
	return 0;
}

/* A v4 CIDR also matches v4-mapped v6 addresses (clients of a "[::]"
 * listener), and a v6 CIDR matches v4 addresses in their mapped form. */
bool config_cidr_match(const struct cfg_cidr *c, const struct sockaddr *sa)
{
	const uint8_t *a;
	uint8_t mapped[16];

	if (sa->sa_family == AF_INET && c->family == AF_INET) {
		a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		if (c->family == AF_INET) {
			if (!IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a))
				return false;
			a += 12;
		}
	} else if (sa->sa_family == AF_INET && c->family == AF_INET6) {
		memset(mapped, 0, 10);
		mapped[10] = mapped[11] = 0xff;
		memcpy(mapped + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		a = mapped;
	} else {
		return false;
	}
	for (unsigned i = 0; i < 16 && i * 8 < c->prefix; i++) {
		unsigned bits = c->prefix - i * 8 >= 8 ? 8 : c->prefix - i * 8;
		uint8_t mask = (uint8_t)(0xff00u >> bits);

		if ((a[i] & mask) != c->addr[i])
			return false;
	}
	return true;
}

/* n: a scalar already checked by want(). */
static int addr_of(struct ctx *c, yaml_node_t *n, const char *what, struct cfg_addr *out)
{
	if (config_parse_addr(scalar(n), out) < 0)
		return fail(c, n, "%s: bad address \"%s\" (host:port or [v6]:port with a port "
				  "of 1 to 65535, and a host name that resolves)",
			    what, scalar(n));
	return 0;
}

static int get_addr(struct ctx *c, yaml_node_t *n, const char *what, struct cfg_addr *out)
{
	if (want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	return addr_of(c, n, what, out);
}

const char *config_handoff_name(enum cfg_handoff h)
{
	static const char *const names[] = { "none", "proxy_v1", "proxy_v2", "xclient" };

	return (unsigned)h < sizeof(names) / sizeof(names[0]) ? names[h] : "?";
}

static const char *const tls_kinds[] = { "none", "starttls", "implicit", NULL };
static const char *const tls_modes[] = { "terminate", "passthrough", NULL };
static const char *const handoffs[] = { "none", "proxy_v1", "proxy_v2", "xclient", NULL };
static const char *const balances[] = { "roundrobin", "leastconn", "source", "ehlo", "random",
					NULL };
static const char *const checks[] = { "smtp", "tcp", "none", NULL };
static const char *const relays[] = { "auto", "copy", "splice", NULL };
static const char *const levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const formats[] = { "text", "json", NULL };

/*
 * Walk a mapping: for each key, fn(c, key, value, arg) returns 0, -1
 * (error reported) or 1 (unknown key). Duplicate keys are errors.
 */
typedef int pair_fn(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg);

static int each_pair(struct ctx *c, yaml_node_t *map, const char *section, pair_fn *fn,
		     void *arg)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
		int r;

		if (want(c, k, YAML_SCALAR_NODE, "key") < 0)
			return -1;
		for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++)
			if (!strcmp(scalar(node(c, q->key)), scalar(k)))
				return fail(c, k, "duplicate key \"%s\" in %s", scalar(k), section);
		r = fn(c, scalar(k), k, v, arg);
		if (r < 0)
			return -1;
		if (r > 0)
			return fail(c, k, "unknown key \"%s\" in %s", scalar(k), section);
	}
	return 0;
}

static bool has_key(struct ctx *c, yaml_node_t *map, const char *key)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = node(c, p->key);

		if (k->type == YAML_SCALAR_NODE && !strcmp(scalar(k), key))
			return true;
	}
	return false;
}

static int need(struct ctx *c, yaml_node_t *map, const char *section, const char *const *keys)
{
	for (int i = 0; keys[i]; i++)
		if (!has_key(c, map, keys[i]))
			return fail(c, map, "%s: missing required key \"%s\"", section, keys[i]);
	return 0;
}

static int check_name(struct ctx *c, yaml_node_t *n, const char *what, const char *s)
{
	if (!*s || strlen(s) > CFG_NAME_MAX)
		return fail(c, n, "%s: a name of 1 to %d characters is needed", what, CFG_NAME_MAX);
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p < 0x21 || *p == '/' || *p == '"' || *p == '\\' || *p == 0x7f)
			return fail(c, n, "%s: \"%s\" has a character not allowed in names "
					  "(space, control, / \" \\)",
				    what, s);
	return 0;
}

/* ---- server ---- */

static int log_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_server *s = arg;
	int i;

	(void)k;
	if (!strcmp(key, "level")) {
		if (get_enum(c, v, "server.log.level", levels, &i) < 0)
			return -1;
		s->log_level = (enum cfg_log_level)i;
	} else if (!strcmp(key, "format")) {
		if (get_enum(c, v, "server.log.format", formats, &i) < 0)
			return -1;
		s->log_format = (enum cfg_log_format)i;
	} else {
		return 1;
	}
	return 0;
}

/* "unix:/absolute/path" into a struct sockaddr_un; n is a checked scalar. */
static int unix_addr_of(struct ctx *c, yaml_node_t *n, struct cfg_addr *out)
{
	const char *path = scalar(n) + strlen("unix:");
	struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;

	memset(out, 0, sizeof(*out));
	if (path[0] != '/')
		return fail(c, n, "server.admin.listen: a unix socket needs an absolute path "
				  "(unix:/run/mxlb/admin.sock)");
	if (strlen(path) >= sizeof(sun->sun_path))
		return fail(c, n, "server.admin.listen: a unix socket path has at most %zu "
				  "characters",
			    sizeof(sun->sun_path) - 1);
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, strlen(path) + 1);
	out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
	snprintf(out->text, sizeof(out->text), "%s", scalar(n));
	return 0;
}

static int admin_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_server *s = arg;

	(void)k;
	if (!strcmp(key, "token")) {
		size_t n;

		if (get_str(c, v, "server.admin.token", &s->admin_token) < 0)
			return -1;
		n = strlen(s->admin_token);
		/* the token itself never goes into a message */
		if (n && (n < CFG_TOKEN_MIN || n > CFG_TOKEN_MAX))
			return fail(c, v, "server.admin.token: %d to %d characters are needed "
					  "(openssl rand -hex 16 makes one)",
				    CFG_TOKEN_MIN, CFG_TOKEN_MAX);
		for (const char *p = s->admin_token; *p; p++)
			if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
				return fail(c, v, "server.admin.token: only printable ASCII without "
						  "spaces is allowed");
		return 0;
	}
	if (strcmp(key, "listen"))
		return 1;
	if (want(c, v, YAML_SCALAR_NODE, "server.admin.listen") < 0)
		return -1;
	s->has_admin = *scalar(v) != '\0'; /* "" turns the admin server off */
	s->admin_line = s->admin_column = 0;
	if (!s->has_admin)
		return 0;
	s->admin_line = (unsigned)v->start_mark.line + 1;
	s->admin_column = (unsigned)v->start_mark.column + 1;
	if (!strncmp(scalar(v), "unix:", 5))
		return unix_addr_of(c, v, &s->admin);
	return addr_of(c, v, "server.admin.listen", &s->admin);
}

static int server_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_server *s = arg;

	(void)k;
	if (!strcmp(key, "hostname")) {
		if (get_str(c, v, "server.hostname", &s->hostname) < 0)
			return -1;
		return check_name(c, v, "server.hostname", s->hostname);
	}
	if (!strcmp(key, "workers"))
		return get_u32(c, v, "server.workers", 0, CFG_WORKERS_MAX, &s->workers);
	if (!strcmp(key, "user")) {
		if (get_str(c, v, "server.user", &s->user) < 0)
			return -1;
		if (*s->user && !getpwnam(s->user))
			return fail(c, v, "server.user: no user named \"%s\"", s->user);
		return 0;
	}
	if (!strcmp(key, "max_sessions"))
		return get_u32(c, v, "server.max_sessions", 1, 10000000, &s->max_sessions);
	if (!strcmp(key, "shutdown_timeout"))
		return get_duration(c, v, "server.shutdown_timeout", &s->shutdown_timeout);
	if (!strcmp(key, "log")) {
		if (want(c, v, YAML_MAPPING_NODE, "server.log") < 0)
			return -1;
		return each_pair(c, v, "server.log", log_pair, s);
	}
	if (!strcmp(key, "admin")) {
		if (want(c, v, YAML_MAPPING_NODE, "server.admin") < 0)
			return -1;
		return each_pair(c, v, "server.admin", admin_pair, s);
	}
	return 1;
}

/* ---- tls contexts ---- */

/* The files are only opened here; reading certificates and keys is the
 * TLS layer's work. O_NONBLOCK: a FIFO named by mistake must not hang. */
static int check_file(struct ctx *c, yaml_node_t *n, const char *what, const char *path)
{
	struct stat st;
	int fd;

	if (stat(path, &st) < 0)
		return fail(c, n, "%s: cannot read %s: %s", what, path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return fail(c, n, "%s: %s is not a regular file", what, path);
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return fail(c, n, "%s: cannot read %s: %s", what, path, strerror(errno));
	close(fd);
	return 0;
}

static int cert_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_tls_cert *tc = arg;

	(void)k;
	if (!strcmp(key, "cert")) {
		if (get_str(c, v, "certificates[].cert", &tc->cert) < 0)
			return -1;
		return check_file(c, v, "certificates[].cert", tc->cert);
	}
	if (!strcmp(key, "key")) {
		if (get_str(c, v, "certificates[].key", &tc->key) < 0)
			return -1;
		return check_file(c, v, "certificates[].key", tc->key);
	}
	return 1;
}

static int tls_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_tls *t = arg;
	static const char *const versions[] = { "1.2", "1.3", NULL };
	static const char *const cert_keys[] = { "cert", "key", NULL };
	int i;

	(void)k;
	if (!strcmp(key, "certificates")) {
		size_t n;

		if (want(c, v, YAML_SEQUENCE_NODE, "certificates") < 0)
			return -1;
		n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
		t->certs = calloc(n ? n : 1, sizeof(*t->certs));
		if (!t->certs)
			return fail(c, v, "out of memory");
		for (size_t j = 0; j < n; j++) {
			yaml_node_t *item = node(c, v->data.sequence.items.start[j]);

			if (want(c, item, YAML_MAPPING_NODE, "certificates[]") < 0)
				return -1;
			t->ncerts++;
			if (each_pair(c, item, "certificates[]", cert_pair, &t->certs[j]) < 0 ||
			    need(c, item, "certificates[]", cert_keys) < 0)
				return -1;
		}
		return 0;
	}
	if (!strcmp(key, "min_version")) {
		if (get_enum(c, v, "min_version", versions, &i) < 0)
			return -1;
		t->min_version = i ? 0x0304 : 0x0303;
		return 0;
	}
	if (!strcmp(key, "ciphers"))
		return get_str(c, v, "ciphers", &t->ciphers);
	if (!strcmp(key, "session_tickets"))
		return get_bool(c, v, "session_tickets", &t->session_tickets);
	if (!strcmp(key, "ca")) {
		if (get_str(c, v, "ca", &t->ca) < 0)
			return -1;
		return check_file(c, v, "ca", t->ca);
	}
	if (!strcmp(key, "verify"))
		return get_bool(c, v, "verify", &t->verify);
	if (!strcmp(key, "server_name"))
		return get_str(c, v, "server_name", &t->server_name);
	return 1;
}

static int parse_tls(struct ctx *c, yaml_node_t *map)
{
	size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
	struct config *cfg = c->cfg;

	cfg->tls = calloc(n ? n : 1, sizeof(*cfg->tls));
	if (!cfg->tls)
		return fail(c, map, "out of memory");
	for (size_t i = 0; i < n; i++) {
		yaml_node_pair_t *p = &map->data.mapping.pairs.start[i];
		yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
		struct cfg_tls *t = &cfg->tls[i];

		cfg->ntls++;
		if (get_str(c, k, "tls context name", &t->name) < 0 ||
		    check_name(c, k, "tls context name", t->name) < 0)
			return -1;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(cfg->tls[j].name, t->name))
				return fail(c, k, "duplicate tls context \"%s\"", t->name);
		t->min_version = 0x0303;
		t->session_tickets = true;
		t->verify = true;
		t->ciphers = strdup("");
		t->server_name = strdup("");
		t->line = (int)k->start_mark.line + 1;
		t->column = (int)k->start_mark.column + 1;
		if (!t->ciphers || !t->server_name)
			return fail(c, k, "out of memory");
		if (want(c, v, YAML_MAPPING_NODE, "tls context") < 0 ||
		    each_pair(c, v, "tls context", tls_pair, t) < 0)
			return -1;
	}
	return 0;
}

static struct cfg_tls *find_tls(struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->ntls; i++)
		if (!strcmp(cfg->tls[i].name, name))
			return &cfg->tls[i];
	return NULL;
}

static int get_tls_ref(struct ctx *c, yaml_node_t *v, const char *what, struct cfg_tls **out)
{
	char *name = NULL;

	if (get_str(c, v, what, &name) < 0)
		return -1;
	*out = find_tls(c->cfg, name);
	if (!*out) {
		fail(c, v, "%s: no tls context named \"%s\"", what, name);
		free(name);
		return -1;
	}
	free(name);
	return 0;
}

/* ---- pools ---- */

static int health_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_health *h = arg;
	int i;

	(void)k;
	if (!strcmp(key, "check")) {
		if (get_enum(c, v, "health.check", checks, &i) < 0)
			return -1;
		h->check = (enum cfg_check)i;
		return 0;
	}
	if (!strcmp(key, "interval"))
		return get_duration(c, v, "health.interval", &h->interval);
	if (!strcmp(key, "timeout"))
		return get_duration(c, v, "health.timeout", &h->timeout);
	if (!strcmp(key, "rise"))
		return get_u32(c, v, "health.rise", 1, 1000, &h->rise);
	if (!strcmp(key, "fall"))
		return get_u32(c, v, "health.fall", 1, 1000, &h->fall);
	if (!strcmp(key, "ehlo"))
		return get_str(c, v, "health.ehlo", &h->ehlo);
	return 1;
}

struct backend_arg {
	struct cfg_backend *b;
	bool handoff_set;
	yaml_node_t *name_node, *tls_node;
};

static int backend_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v,
			void *arg)
{
	struct backend_arg *ba = arg;
	struct cfg_backend *b = ba->b;
	int i;

	(void)k;
	if (!strcmp(key, "name")) {
		ba->name_node = v;
		if (get_str(c, v, "backend name", &b->name) < 0)
			return -1;
		return check_name(c, v, "backend name", b->name);
	}
	if (!strcmp(key, "address"))
		return get_addr(c, v, "backend address", &b->address);
	if (!strcmp(key, "weight"))
		return get_u32(c, v, "backend weight", 0, 1000000, &b->weight);
	if (!strcmp(key, "max_sessions"))
		return get_u32(c, v, "backend max_sessions", 0, 10000000, &b->max_sessions);
	if (!strcmp(key, "backup"))
		return get_bool(c, v, "backend backup", &b->backup);
	if (!strcmp(key, "tls")) {
		if (get_enum(c, v, "backend tls", tls_kinds, &i) < 0)
			return -1;
		b->tls = (enum cfg_tls_kind)i;
		ba->tls_node = v; /* checked once tls_context is known */
		return 0;
	}
	if (!strcmp(key, "tls_context"))
		return get_tls_ref(c, v, "backend tls_context", &b->tls_context);
	if (!strcmp(key, "handoff")) {
		if (get_enum(c, v, "backend handoff", handoffs, &i) < 0)
			return -1;
		b->handoff = (enum cfg_handoff)i;
		ba->handoff_set = true;
		return 0;
	}
	return 1;
}

struct pool_arg {
	struct cfg_pool *p;
	yaml_node_t *backends, *name_node;
};

static int pool_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct pool_arg *pa = arg;
	struct cfg_pool *p = pa->p;
	int i;

	(void)k;
	if (!strcmp(key, "name")) {
		pa->name_node = v;
		if (get_str(c, v, "pool name", &p->name) < 0)
			return -1;
		return check_name(c, v, "pool name", p->name);
	}
	if (!strcmp(key, "balance")) {
		if (get_enum(c, v, "balance", balances, &i) < 0)
			return -1;
		p->balance = (enum cfg_balance)i;
		return 0;
	}
	if (!strcmp(key, "retries"))
		return get_u32(c, v, "retries", 0, 15, &p->retries);
	if (!strcmp(key, "handoff")) {
		if (get_enum(c, v, "handoff", handoffs, &i) < 0)
			return -1;
		p->handoff = (enum cfg_handoff)i;
		return 0;
	}
	if (!strcmp(key, "health")) {
		if (want(c, v, YAML_MAPPING_NODE, "health") < 0)
			return -1;
		return each_pair(c, v, "health", health_pair, &p->health);
	}
	if (!strcmp(key, "backends")) {
		pa->backends = v; /* read after the pool's own keys: handoff applies */
		return 0;
	}
	return 1;
}

static int parse_backends(struct ctx *c, struct cfg_pool *p, yaml_node_t *seq)
{
	static const char *const required[] = { "name", "address", NULL };
	size_t n;

	if (want(c, seq, YAML_SEQUENCE_NODE, "backends") < 0)
		return -1;
	n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	if (!n)
		return fail(c, seq, "pool \"%s\" has no backends", p->name);
	p->backends = calloc(n, sizeof(*p->backends));
	if (!p->backends)
		return fail(c, seq, "out of memory");
	for (size_t j = 0; j < n; j++) {
		yaml_node_t *item = node(c, seq->data.sequence.items.start[j]);
		struct backend_arg ba = { .b = &p->backends[j] };

		if (want(c, item, YAML_MAPPING_NODE, "backends[]") < 0)
			return -1;
		p->nbackends++;
		ba.b->weight = 1;
		if (each_pair(c, item, "backend", backend_pair, &ba) < 0 ||
		    need(c, item, "backend", required) < 0)
			return -1;
		if (!ba.handoff_set)
			ba.b->handoff = p->handoff;
		if (ba.b->tls != CFG_TLS_NONE && !ba.b->tls_context)
			return fail(c, ba.tls_node, "backend \"%s\": tls: %s needs a tls_context",
				    ba.b->name, scalar(ba.tls_node));
		if (ba.tls_node && refuse_unbuilt(c, ba.tls_node, "backend tls") < 0)
			return -1;
		for (size_t q = 0; q < j; q++)
			if (!strcmp(p->backends[q].name, ba.b->name))
				return fail(c, ba.name_node, "duplicate backend \"%s\" in pool \"%s\"",
					    ba.b->name, p->name);
	}
	return 0;
}

static int parse_pools(struct ctx *c, yaml_node_t *seq)
{
	static const char *const required[] = { "name", "backends", NULL };
	struct config *cfg = c->cfg;
	size_t n;

	if (want(c, seq, YAML_SEQUENCE_NODE, "pools") < 0)
		return -1;
	n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	cfg->pools = calloc(n ? n : 1, sizeof(*cfg->pools));
	if (!cfg->pools)
		return fail(c, seq, "out of memory");
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = node(c, seq->data.sequence.items.start[i]);
		struct cfg_pool *p = &cfg->pools[i];
		struct pool_arg pa = { .p = p };

		if (want(c, item, YAML_MAPPING_NODE, "pools[]") < 0)
			return -1;
		cfg->npools++;
		p->index = i;
		p->retries = 2;
		p->health = (struct cfg_health){
			.check = CFG_CHECK_SMTP,
			.interval = 2000,
			.timeout = 2000,
			.rise = 2,
			.fall = 3,
		};
		if (each_pair(c, item, "pool", pool_pair, &pa) < 0 ||
		    need(c, item, "pool", required) < 0)
			return -1;
		for (size_t q = 0; q < i; q++)
			if (!strcmp(cfg->pools[q].name, p->name))
				return fail(c, pa.name_node, "duplicate pool \"%s\"", p->name);
		if (parse_backends(c, p, pa.backends) < 0)
			return -1;
		if (!p->health.ehlo || !*p->health.ehlo) {
			free(p->health.ehlo);
			p->health.ehlo = strdup(cfg->server.hostname);
			if (!p->health.ehlo)
				return fail(c, item, "out of memory");
		}
	}
	return 0;
}

static struct cfg_pool *find_pool(struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->npools; i++)
		if (!strcmp(cfg->pools[i].name, name))
			return &cfg->pools[i];
	return NULL;
}

static int get_pool_ref(struct ctx *c, yaml_node_t *v, const char *what, struct cfg_pool **out)
{
	char *name = NULL;

	if (get_str(c, v, what, &name) < 0)
		return -1;
	*out = find_pool(c->cfg, name);
	if (!*out) {
		fail(c, v, "%s: no pool named \"%s\"", what, name);
		free(name);
		return -1;
	}
	free(name);
	return 0;
}

/* ---- listeners ---- */

static int timeout_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v,
			void *arg)
{
	struct cfg_timeouts *t = arg;
	static const struct {
		const char *name;
		size_t off;
	} keys[] = {
		{ "proxy_header", offsetof(struct cfg_timeouts, proxy_header) },
		{ "tls_handshake", offsetof(struct cfg_timeouts, tls_handshake) },
		{ "command", offsetof(struct cfg_timeouts, command) },
		{ "connect", offsetof(struct cfg_timeouts, connect) },
		{ "backend_reply", offsetof(struct cfg_timeouts, backend_reply) },
		{ "idle", offsetof(struct cfg_timeouts, idle) },
	};

	(void)k;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (strcmp(key, keys[i].name))
			continue;
		if (get_duration(c, v, key, (uint32_t *)((char *)t + keys[i].off)) < 0)
			return -1;
		if (!*(uint32_t *)((char *)t + keys[i].off))
			return fail(c, v, "%s: a timeout must be more than 0", key);
		return 0;
	}
	return 1;
}

static int route_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_route *r = arg;

	(void)k;
	if (!strcmp(key, "ehlo"))
		return get_str(c, v, "route ehlo", &r->ehlo);
	if (!strcmp(key, "client")) {
		if (want(c, v, YAML_SCALAR_NODE, "route client") < 0)
			return -1;
		if (config_parse_cidr(scalar(v), &r->client) < 0)
			return fail(c, v, "route client: bad CIDR \"%s\"", scalar(v));
		r->has_client = true;
		return 0;
	}
	if (!strcmp(key, "sni"))
		return get_str(c, v, "route sni", &r->sni);
	if (!strcmp(key, "pool"))
		return get_pool_ref(c, v, "route pool", &r->pool);
	return 1;
}

static bool same_addr(const struct cfg_addr *a, const struct cfg_addr *b)
{
	return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
}

/* v6 sockets are V6ONLY, so "[::]" does not cover v4. */
bool config_addr_overlap(const struct cfg_addr *a, const struct cfg_addr *b)
{
	if (a->ss.ss_family != b->ss.ss_family)
		return false;
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;

		return x->sin_port == y->sin_port &&
		       (x->sin_addr.s_addr == y->sin_addr.s_addr ||
			x->sin_addr.s_addr == htonl(INADDR_ANY) ||
			y->sin_addr.s_addr == htonl(INADDR_ANY));
	}
	if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;

		return x->sin6_port == y->sin6_port &&
		       (IN6_ARE_ADDR_EQUAL(&x->sin6_addr, &y->sin6_addr) ||
			IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) ||
			IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
	}
	return false;
}

bool config_addr_is_local(const struct cfg_addr *a)
{
	if (a->ss.ss_family == AF_UNIX)
		return true;
	if (a->ss.ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr) >> 24) == 127;
	if (a->ss.ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
	return false;
}

/* An address already taken by an earlier listener, or earlier in l's list
 * (l is the last of c->cfg->listeners). */
static const struct cfg_addr *listened(struct ctx *c, const struct cfg_listener *l,
				       const struct cfg_addr *a)
{
	for (size_t q = 0; q < c->cfg->nlisteners; q++) {
		const struct cfg_listener *o = &c->cfg->listeners[q];

		for (size_t i = 0; i < o->nlisten; i++)
			if (&o->listen[i] != a && same_addr(&o->listen[i], a))
				return &o->listen[i];
		if (o == l)
			break;
	}
	return NULL;
}

/* listen: one address or a list of them. */
static int parse_listen(struct ctx *c, struct cfg_listener *l, yaml_node_t *v)
{
	yaml_node_item_t *items = NULL;
	size_t n = 1;

	if (v->type == YAML_SEQUENCE_NODE) {
		items = v->data.sequence.items.start;
		n = (size_t)(v->data.sequence.items.top - items);
		if (!n)
			return fail(c, v, "listen: at least one address is needed");
	}
	l->listen = calloc(n, sizeof(*l->listen));
	if (!l->listen)
		return fail(c, v, "out of memory");
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *a = items ? node(c, items[i]) : v;
		const struct cfg_addr *dup;

		if (get_addr(c, a, "listen", &l->listen[i]) < 0)
			return -1;
		l->nlisten++;
		dup = listened(c, l, &l->listen[i]);
		if (dup)
			return fail(c, a, "%s is listened on twice (as %s)", l->listen[i].text,
				    dup->text);
		/* one owner per address (SPEC §11): sharing it with the admin
		 * server would split connections between the two */
		if (c->cfg->server.has_admin &&
		    config_addr_overlap(&l->listen[i], &c->cfg->server.admin))
			return fail(c, a, "%s is taken by the admin server (server.admin.listen: %s); "
					  "each needs an address of its own",
				    l->listen[i].text, c->cfg->server.admin.text);
	}
	return 0;
}

struct listener_arg {
	struct cfg_listener *l;
	yaml_node_t *name_node, *tls_node, *mode_node;
};

/* A pool a listener can send sessions to: its own and its routes'. */
static int check_passthrough_pool(struct ctx *c, yaml_node_t *n, const struct cfg_listener *l,
				  const struct cfg_pool *p)
{
	for (size_t i = 0; i < p->nbackends; i++) {
		const struct cfg_backend *b = &p->backends[i];

		if (b->handoff == CFG_HANDOFF_XCLIENT)
			return fail(c, n,
				    "listener \"%s\": passthrough cannot guard XCLIENT inside the "
				    "client's TLS (pool \"%s\", backend \"%s\"); use proxy_v1 or "
				    "proxy_v2",
				    l->name, p->name, b->name);
		if (l->tls == CFG_TLS_IMPLICIT && b->tls != CFG_TLS_NONE)
			return fail(c, n,
				    "listener \"%s\": passthrough forwards the client's TLS as it "
				    "is, so backend \"%s\" of pool \"%s\" must have tls: none",
				    l->name, b->name, p->name);
	}
	return 0;
}

static int check_listener_tls(struct ctx *c, struct listener_arg *la, yaml_node_t *item)
{
	const struct cfg_listener *l = la->l;
	yaml_node_t *n = la->mode_node ? la->mode_node : item;

	if (l->tls_mode == CFG_TLS_PASSTHROUGH) {
		if (l->tls == CFG_TLS_NONE)
			return fail(c, n, "listener \"%s\": tls_mode: passthrough needs tls: "
					  "starttls or implicit", l->name);
		if (check_passthrough_pool(c, n, l, l->pool) < 0)
			return -1;
		for (size_t i = 0; i < l->nroutes; i++)
			if (check_passthrough_pool(c, n, l, l->routes[i].pool) < 0)
				return -1;
		return 0;
	}
	if (l->tls != CFG_TLS_NONE && l->tls_context->ncerts == 0)
		return fail(c, la->tls_node,
			    "listener \"%s\": tls_context \"%s\" has no certificates to "
			    "terminate TLS with", l->name, l->tls_context->name);
	return 0;
}

static int listener_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v,
			 void *arg)
{
	struct listener_arg *la = arg;
	struct cfg_listener *l = la->l;
	int i;

	(void)k;
	if (!strcmp(key, "name")) {
		la->name_node = v;
		if (get_str(c, v, "listener name", &l->name) < 0)
			return -1;
		return check_name(c, v, "listener name", l->name);
	}
	if (!strcmp(key, "listen"))
		return parse_listen(c, l, v);
	if (!strcmp(key, "tls")) {
		if (get_enum(c, v, "listener tls", tls_kinds, &i) < 0)
			return -1;
		l->tls = (enum cfg_tls_kind)i;
		la->tls_node = v; /* checked once tls_context is known */
		return 0;
	}
	if (!strcmp(key, "tls_context"))
		return get_tls_ref(c, v, "listener tls_context", &l->tls_context);
	if (!strcmp(key, "tls_mode")) {
		if (get_enum(c, v, "tls_mode", tls_modes, &i) < 0)
			return -1;
		l->tls_mode = (enum cfg_tls_mode)i;
		la->mode_node = v;
		return 0;
	}
	if (!strcmp(key, "require_tls"))
		return get_bool(c, v, "require_tls", &l->require_tls);
	if (!strcmp(key, "accept_proxy"))
		return get_bool(c, v, "accept_proxy", &l->accept_proxy);
	if (!strcmp(key, "banner")) {
		if (get_str(c, v, "banner", &l->banner) < 0)
			return -1;
		for (const char *p = l->banner; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				return fail(c, v, "banner: control characters are not allowed");
		if (strlen(l->banner) > CFG_BANNER_MAX)
			return fail(c, v, "banner: at most %d characters", CFG_BANNER_MAX);
		return 0;
	}
	if (!strcmp(key, "pool"))
		return get_pool_ref(c, v, "listener pool", &l->pool);
	if (!strcmp(key, "routes")) {
		size_t n;

		if (want(c, v, YAML_SEQUENCE_NODE, "routes") < 0)
			return -1;
		n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
		l->routes = calloc(n ? n : 1, sizeof(*l->routes));
		if (!l->routes)
			return fail(c, v, "out of memory");
		for (size_t j = 0; j < n; j++) {
			yaml_node_t *item = node(c, v->data.sequence.items.start[j]);
			static const char *const required[] = { "pool", NULL };

			if (want(c, item, YAML_MAPPING_NODE, "routes[]") < 0)
				return -1;
			l->nroutes++;
			if (each_pair(c, item, "route", route_pair, &l->routes[j]) < 0 ||
			    need(c, item, "route", required) < 0)
				return -1;
		}
		return 0;
	}
	if (!strcmp(key, "max_sessions_per_client"))
		return get_u32(c, v, "max_sessions_per_client", 0, 10000000,
			       &l->max_sessions_per_client);
	if (!strcmp(key, "relay")) {
		if (get_enum(c, v, "relay", relays, &i) < 0)
			return -1;
		l->relay = (enum cfg_relay)i;
		return refuse_unbuilt(c, v, "relay");
	}
	if (!strcmp(key, "timeouts")) {
		if (want(c, v, YAML_MAPPING_NODE, "timeouts") < 0)
			return -1;
		return each_pair(c, v, "timeouts", timeout_pair, &l->timeouts);
	}
	return 1;
}

static int parse_listeners(struct ctx *c, yaml_node_t *seq)
{
	static const char *const required[] = { "name", "listen", "pool", NULL };
	struct config *cfg = c->cfg;
	size_t n;

	if (want(c, seq, YAML_SEQUENCE_NODE, "listeners") < 0)
		return -1;
	n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
	if (!n)
		return fail(c, seq, "listeners: at least one listener is needed");
	cfg->listeners = calloc(n, sizeof(*cfg->listeners));
	if (!cfg->listeners)
		return fail(c, seq, "out of memory");
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *item = node(c, seq->data.sequence.items.start[i]);
		struct cfg_listener *l = &cfg->listeners[i];
		struct listener_arg la = { .l = l };

		if (want(c, item, YAML_MAPPING_NODE, "listeners[]") < 0)
			return -1;
		cfg->nlisteners++;
		l->timeouts = (struct cfg_timeouts){
			.proxy_header = 5000,
			.tls_handshake = 10000,
			.command = 300000,
			.connect = 5000,
			.backend_reply = 30000,
			.idle = 600000,
		};
		if (each_pair(c, item, "listener", listener_pair, &la) < 0 ||
		    need(c, item, "listener", required) < 0)
			return -1;
		if (!l->banner && !(l->banner = strdup("ESMTP")))
			return fail(c, item, "out of memory");
		if (l->tls != CFG_TLS_NONE && l->tls_mode == CFG_TLS_TERMINATE && !l->tls_context)
			return fail(c, la.tls_node, "listener \"%s\": tls: %s needs a tls_context",
				    l->name, scalar(la.tls_node));
		if (check_listener_tls(c, &la, item) < 0)
			return -1;
		for (size_t q = 0; q < i; q++)
			if (!strcmp(cfg->listeners[q].name, l->name))
				return fail(c, la.name_node, "duplicate listener \"%s\"", l->name);
	}
	return 0;
}

/* ---- alerts ---- */

/* An address that goes between <> in MAIL FROM / RCPT TO as it is. */
static int check_mailbox(struct ctx *c, yaml_node_t *n, const char *what, const char *s)
{
	if (!*s || strlen(s) > CFG_MAILBOX_MAX || !strchr(s, '@'))
		return fail(c, n, "%s: \"%s\" is not a mail address", what, s);
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f)
			return fail(c, n, "%s: \"%s\" is not a mail address", what, s);
	return 0;
}

static int alerts_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_alerts *a = arg;
	static const char *const events[] = { "backend_down", "backend_up", "pool_down", NULL };

	(void)k;
	if (!strcmp(key, "smtp"))
		return get_addr(c, v, "alerts.smtp", &a->smtp);
	if (!strcmp(key, "from")) {
		if (get_str(c, v, "alerts.from", &a->from) < 0)
			return -1;
		return check_mailbox(c, v, "alerts.from", a->from);
	}
	if (!strcmp(key, "to") || !strcmp(key, "events")) {
		bool to = !strcmp(key, "to");
		size_t n;

		if (want(c, v, YAML_SEQUENCE_NODE, key) < 0)
			return -1;
		n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
		if (to && !(a->to = calloc(n ? n : 1, sizeof(*a->to))))
			return fail(c, v, "out of memory");
		for (size_t i = 0; i < n; i++) {
			yaml_node_t *item = node(c, v->data.sequence.items.start[i]);
			int e;

			if (to) {
				a->nto++;
				if (get_str(c, item, "alerts.to", &a->to[i]) < 0 ||
				    check_mailbox(c, item, "alerts.to", a->to[i]) < 0)
					return -1;
			} else {
				if (get_enum(c, item, "alerts.events", events, &e) < 0)
					return -1;
				a->events |= 1u << e;
			}
		}
		return 0;
	}
	return 1;
}

/* ---- the document ---- */

struct top {
	yaml_node_t *server, *tls, *listeners, *pools, *alerts;
};

static int top_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct top *t = arg;

	(void)c;
	(void)k;
	if (!strcmp(key, "server"))
		t->server = v;
	else if (!strcmp(key, "tls"))
		t->tls = v;
	else if (!strcmp(key, "listeners"))
		t->listeners = v;
	else if (!strcmp(key, "pools"))
		t->pools = v;
	else if (!strcmp(key, "alerts"))
		t->alerts = v;
	else
		return 1;
	return 0;
}

static int load_doc(struct ctx *c, yaml_node_t *root)
{
	struct config *cfg = c->cfg;
	struct top t = { 0 };
	char host[256];

	if (!root || (root->type == YAML_SCALAR_NODE &&
		      root->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
		      (!strcmp(scalar(root), "") || !strcmp(scalar(root), "~") ||
		       !strcasecmp(scalar(root), "null"))))
		return fail(c, root, "no configuration");
	if (want(c, root, YAML_MAPPING_NODE, "configuration") < 0 ||
	    each_pair(c, root, "the top level", top_pair, &t) < 0)
		return -1;
	cfg->server.max_sessions = 50000;
	cfg->server.shutdown_timeout = 30000;
	cfg->server.log_level = CFG_LOG_INFO;
	cfg->server.has_admin = true;
	config_parse_addr("127.0.0.1:8025", &cfg->server.admin);
	if (t.server) {
		if (want(c, t.server, YAML_MAPPING_NODE, "server") < 0 ||
		    each_pair(c, t.server, "server", server_pair, &cfg->server) < 0)
			return -1;
	}
	if (!cfg->server.hostname) {
		if (gethostname(host, sizeof(host)) < 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		cfg->server.hostname = strdup(host);
	}
	if (!cfg->server.user)
		cfg->server.user = strdup("");
	if (!cfg->server.admin_token)
		cfg->server.admin_token = strdup("");
	if (!cfg->server.hostname || !cfg->server.user || !cfg->server.admin_token)
		return fail(c, root, "out of memory");
	if (!cfg->server.workers) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		cfg->server.workers = n < 1 ? 1 : n > CFG_WORKERS_MAX ? CFG_WORKERS_MAX : (uint32_t)n;
	}
	if (t.tls && (want(c, t.tls, YAML_MAPPING_NODE, "tls") < 0 || parse_tls(c, t.tls) < 0))
		return -1;
	if (!t.pools)
		return fail(c, root, "missing required key \"pools\"");
	if (parse_pools(c, t.pools) < 0)
		return -1;
	if (!t.listeners)
		return fail(c, root, "missing required key \"listeners\"");
	if (parse_listeners(c, t.listeners) < 0)
		return -1;
	if (t.alerts) {
		static const char *const required[] = { "smtp", "from", "to", NULL };

		if (want(c, t.alerts, YAML_MAPPING_NODE, "alerts") < 0 ||
		    each_pair(c, t.alerts, "alerts", alerts_pair, &cfg->alerts) < 0 ||
		    need(c, t.alerts, "alerts", required) < 0)
			return -1;
		if (!cfg->alerts.nto)
			return fail(c, t.alerts, "alerts.to: at least one recipient is needed");
		cfg->alerts.enabled = true;
		if (!cfg->alerts.events)
			cfg->alerts.events = CFG_EV_BACKEND_DOWN | CFG_EV_BACKEND_UP | CFG_EV_POOL_DOWN;
	}
	return 0;
}

/* libyaml's reader (encoding, control characters) reports a byte offset
 * instead of a mark: count lines and characters up to it. */
static void offset_mark(const char *text, size_t len, size_t off, size_t *line, size_t *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off && i < len; i++) {
		if (text[i] == '\n') {
			++*line;
			*col = 1;
		} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
			++*col;
		}
	}
}

static void yaml_error(const yaml_parser_t *parser, const char *name, const char *text,
		       size_t len, char *err, size_t errlen)
{
	size_t line = parser->problem_mark.line + 1, col = parser->problem_mark.column + 1;

	if (parser->error == YAML_MEMORY_ERROR) {
		snprintf(err, errlen, "%s: out of memory", name);
		return;
	}
	if (parser->error == YAML_READER_ERROR)
		offset_mark(text, len, parser->problem_offset, &line, &col);
	snprintf(err, errlen, "%s:%zu:%zu: %s%s%s", name, line, col,
		 parser->problem ? parser->problem : "bad YAML", parser->context ? " " : "",
		 parser->context ? parser->context : "");
}

/*
 * The first pass, over events: the syntax, one document at most, a bounded
 * depth, and no aliases (the walk then never meets a node twice, and an
 * alias cannot make a cycle or multiply the work).
 */
static int check_events(const char *name, const char *text, size_t len, char *err,
			size_t errlen)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	int docs = 0, depth = 0, r = -1;

	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	for (;;) {
		if (!yaml_parser_parse(&parser, &ev)) {
			yaml_error(&parser, name, text, len, err, errlen);
			break;
		}
		if (ev.type == YAML_ALIAS_EVENT) {
			snprintf(err, errlen, "%s:%zu:%zu: aliases (*%s) are not supported", name,
				 ev.start_mark.line + 1, ev.start_mark.column + 1,
				 (const char *)ev.data.alias.anchor);
		} else if ((ev.type == YAML_SEQUENCE_START_EVENT ||
			    ev.type == YAML_MAPPING_START_EVENT) &&
			   ++depth > CFG_DEPTH_MAX) {
			snprintf(err, errlen, "%s:%zu:%zu: nested more than %d levels deep", name,
				 ev.start_mark.line + 1, ev.start_mark.column + 1, CFG_DEPTH_MAX);
		} else if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
			depth--;
			yaml_event_delete(&ev);
			continue;
		} else if (ev.type == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
			snprintf(err, errlen, "%s:%zu:%zu: only one YAML document is allowed", name,
				 ev.start_mark.line + 1, ev.start_mark.column + 1);
		} else if (ev.type == YAML_STREAM_END_EVENT) {
			r = 0;
		} else {
			yaml_event_delete(&ev);
			continue;
		}
		yaml_event_delete(&ev);
		break;
	}
	yaml_parser_delete(&parser);
	return r;
}

struct config *config_load_buffer(const char *name, const char *text, size_t len, char *err,
				  size_t errlen)
{
	struct ctx c = { .file = name, .err = err, .errlen = errlen };
	yaml_parser_t parser;
	int r;

	if (check_events(name, text, len, err, errlen) < 0)
		return NULL;
	c.cfg = calloc(1, sizeof(*c.cfg));
	if (!c.cfg || !(c.cfg->path = strdup(name)) || !yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory", name);
		config_free(c.cfg);
		return NULL;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &c.doc)) {
		yaml_error(&parser, name, text, len, err, errlen);
		yaml_parser_delete(&parser);
		config_free(c.cfg);
		return NULL;
	}
	yaml_parser_delete(&parser);
	r = load_doc(&c, yaml_document_get_root_node(&c.doc));
	yaml_document_delete(&c.doc);
	if (r < 0) {
		config_free(c.cfg);
		return NULL;
	}
	return c.cfg;
}

/* Read to the end rather than trusting st_size, so pipes work too
 * (mxlb -c <(...)). */
struct config *config_load(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	struct config *cfg = NULL;
	char *text;
	size_t n;

	if (!f) {
		snprintf(err, errlen, "%s:1:1: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	text = malloc(CFG_FILE_MAX + 1);
	if (!text) {
		snprintf(err, errlen, "%s: out of memory", path);
		fclose(f);
		return NULL;
	}
	n = fread(text, 1, CFG_FILE_MAX + 1, f);
	if (ferror(f))
		snprintf(err, errlen, "%s:1:1: cannot read: %s", path, strerror(errno));
	else if (n > CFG_FILE_MAX)
		snprintf(err, errlen, "%s:1:1: larger than %d bytes", path, CFG_FILE_MAX);
	else
		cfg = config_load_buffer(path, text, n, err, errlen);
	fclose(f);
	free(text);
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	free(cfg->path);
	free(cfg->server.hostname);
	free(cfg->server.user);
	free(cfg->server.admin_token);
	for (size_t i = 0; i < cfg->ntls; i++) {
		struct cfg_tls *t = &cfg->tls[i];

		for (size_t j = 0; j < t->ncerts; j++) {
			free(t->certs[j].cert);
			free(t->certs[j].key);
		}
		free(t->certs);
		free(t->name);
		free(t->ciphers);
		free(t->ca);
		free(t->server_name);
	}
	free(cfg->tls);
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		struct cfg_listener *l = &cfg->listeners[i];

		free(l->name);
		free(l->listen);
		free(l->banner);
		for (size_t j = 0; j < l->nroutes; j++) {
			free(l->routes[j].ehlo);
			free(l->routes[j].sni);
		}
		free(l->routes);
	}
	free(cfg->listeners);
	for (size_t i = 0; i < cfg->npools; i++) {
		struct cfg_pool *p = &cfg->pools[i];

		free(p->name);
		free(p->health.ehlo);
		for (size_t j = 0; j < p->nbackends; j++)
			free(p->backends[j].name);
		free(p->backends);
	}
	free(cfg->pools);
	free(cfg->alerts.from);
	for (size_t i = 0; i < cfg->alerts.nto; i++)
		free(cfg->alerts.to[i]);
	free(cfg->alerts.to);
	free(cfg);
}
