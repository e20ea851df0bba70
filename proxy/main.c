/* main.c - the command line, listening sockets, worker threads and
 * signals (SPEC §2).
 *
 * One owner per address (SPEC §11): each worker has its own SO_REUSEPORT
 * socket per mail address, and the kernel would just as gladly put a
 * second mxlb's sockets into the same group and split the traffic. So
 * before this process binds an address for the first time (at start, and
 * at a reload for addresses new to it) it binds a probe socket there
 * without SO_REUSEPORT, which fails while anyone else listens on it (two
 * mxlb started in the same millisecond could still both pass it: only a
 * few system calls lie between the probe and the bind). The admin socket
 * is a single socket without SO_REUSEPORT, its own probe.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proxy/proxy.h"

#define MXLB_VERSION "0.1.0"
#define LISTEN_BACKLOG 4096
#define ERR_MAX (CFG_ERR_MAX + 512) /* a config error, or an address and why it failed */

_Thread_local struct runtime *mxlb_rt;

/* A unix socket file this process made: removed when the process stops
 * using it, unless the path has become another file since. */
struct sock_file {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev;
	ino_t ino;
};

static struct sock_file admin_file;

static void usage(FILE *f)
{
	fprintf(f, "usage: mxlb [-c FILE] [--check]\n"
		   "  -c, --config FILE  configuration (default /etc/mxlb/mxlb.yaml)\n"
		   "      --check        validate the configuration and exit (0 valid, 1 invalid)\n"
		   "      --version      print the version\n"
		   "  -h, --help         this text\n");
}

static bool listened_on(const struct config *cfg, const struct cfg_addr *a)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nlisten; j++) {
			const struct cfg_addr *b = &cfg->listeners[i].listen[j];

			if (a->len == b->len && !memcmp(&a->ss, &b->ss, a->len))
				return true;
		}
	return false;
}

/* Why a cannot be listened on, in err: one line for stderr or the log. */
static int listen_error(char *err, size_t len, const struct cfg_addr *a, const char *what,
			int e)
{
	if (e == EADDRINUSE)
		snprintf(err, len, "%s (%s) is already in use: another process listens there",
			 a->text, what);
	else
		snprintf(err, len, "cannot listen on %s (%s): %s", a->text, what, strerror(e));
	return -1;
}

/* A TCP socket bound to a, or -errno. reuseport: a mail listener's, one of
 * a group across the workers; without it, the bind fails while any other
 * socket listens on a. */
static int bind_tcp(const struct cfg_addr *a, bool reuseport)
{
	int one = 1, fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	/* connections of an earlier run in TIME_WAIT do not block the address */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* accepted sockets inherit it: no setsockopt per connection */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* Whether old's listeners hold a or an address that overlaps it (then the
 * probe would only meet this process's own sockets). */
static bool held(const struct config *old, const struct cfg_addr *a)
{
	for (size_t i = 0; i < old->nlisteners; i++)
		for (size_t j = 0; j < old->listeners[i].nlisten; j++)
			if (config_addr_overlap(a, &old->listeners[i].listen[j]))
				return true;
	return false;
}

/* Every mail address of cfg that old (NULL at start) does not hold is
 * free: the probe of the comment at the top. */
static int probe_new(const struct config *cfg, const struct config *old, char *err,
		     size_t len)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nlisten; j++) {
			const struct cfg_addr *a = &cfg->listeners[i].listen[j];
			char what[160];
			int fd;

			if (old && held(old, a))
				continue;
			snprintf(what, sizeof(what), "listener %s", cfg->listeners[i].name);
			if (old && old->server.has_admin &&
			    config_addr_overlap(&old->server.admin, a)) {
				snprintf(err, len, "%s (%s) is the running admin server's address: "
						   "move the admin server in a reload of its own first",
					 a->text, what);
				return -1;
			}
			fd = bind_tcp(a, false);
			if (fd < 0)
				return listen_error(err, len, a, what, -fd);
			close(fd);
		}
	return 0;
}

/* The admin unix socket, mode 0660 (SPEC §12). A socket file nobody
 * answers on is left over from a run that did not stop cleanly and goes;
 * one somebody answers on is in use; any other kind of file is not ours
 * to remove. As root with server.user set, the file goes to that user and
 * its group, whose members can then use it; without CAP_CHOWN it stays
 * root's, which is safe, and a warning says so. */
static int listen_unix(const struct cfg_addr *a, const char *user, struct sock_file *made,
		       char *err, size_t len)
{
	const char *path = ((const struct sockaddr_un *)&a->ss)->sun_path;
	struct stat st;
	mode_t mask;
	int fd, r;

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, len, "cannot listen on %s (admin): %s exists and is not a socket",
				 a->text, path);
			return -1;
		}
		/* non-blocking: a full backlog (EAGAIN) is somebody answering too */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return listen_error(err, len, a, "admin", errno);
		r = connect(fd, (const struct sockaddr *)&a->ss, a->len);
		if (r < 0)
			r = -errno;
		close(fd);
		if (r == 0 || r == -EAGAIN)
			return listen_error(err, len, a, "admin", EADDRINUSE);
		errno = -r;
		if (errno != ECONNREFUSED || (unlink(path) < 0 && errno != ENOENT))
			return listen_error(err, len, a, "admin", errno);
	} else if (errno != ENOENT) {
		return listen_error(err, len, a, "admin", errno);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return listen_error(err, len, a, "admin", errno);
	/* created 0660 at once, never briefly wider; no other thread makes files */
	mask = umask(0117);
	r = bind(fd, (const struct sockaddr *)&a->ss, a->len);
	umask(mask);
	if (r < 0) {
		r = errno;
		close(fd);
		return listen_error(err, len, a, "admin", r);
	}
	if (lstat(path, &st) == 0) {
		snprintf(made->path, sizeof(made->path), "%s", path);
		made->dev = st.st_dev;
		made->ino = st.st_ino;
	}
	if (*user && geteuid() == 0) {
		struct passwd *pw = getpwnam(user);

		if (!pw || chown(path, pw->pw_uid, pw->pw_gid) < 0)
			log_warn("admin", "cannot give %s to user %s (%s): only root can use it",
				 a->text, user, pw ? strerror(errno) : "no such user");
	}
	return fd;
}

static void sock_file_remove(struct sock_file *f)
{
	struct stat st;

	if (f->path[0] && lstat(f->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    st.st_dev == f->dev && st.st_ino == f->ino)
		unlink(f->path);
	f->path[0] = '\0';
}

/* A listening socket on addr for worker w; owner tells mail listeners
 * (their cfg_listener) from the admin socket, whose unix socket file, if
 * it is one, goes in made. */
static int add_lsock(struct worker *w, const struct cfg_addr *a, const void *owner,
		     const char *user, struct sock_file *made, char *err, size_t len)
{
	struct lsock *ls = calloc(1, sizeof(*ls));
	char what[160];
	int fd;

	if (owner == admin_listener)
		snprintf(what, sizeof(what), "admin");
	else
		snprintf(what, sizeof(what), "listener %s",
			 ((const struct cfg_listener *)owner)->name);
	if (!ls) {
		snprintf(err, len, "cannot listen on %s (%s): out of memory", a->text, what);
		return -1;
	}
	if (a->ss.ss_family == AF_UNIX) {
		fd = listen_unix(a, user, made, err, len);
	} else {
		fd = bind_tcp(a, owner != admin_listener);
		if (fd < 0)
			fd = listen_error(err, len, a, what, -fd);
	}
	if (fd >= 0 && listen(fd, LISTEN_BACKLOG) < 0) {
		listen_error(err, len, a, what, errno);
		close(fd);
		fd = -1;
	}
	if (fd < 0) {
		free(ls);
		return -1;
	}
	ls->fd = fd;
	ls->w = w;
	ls->owner = (void *)owner;
	memcpy(&ls->addr, &a->ss, a->len);
	ls->addrlen = a->len;
	ls->next = w->lsocks;
	w->lsocks = ls;
	return 0;
}

static int worker_listen(struct worker *w, const struct config *cfg, char *err, size_t len)
{
	/* the admin HTTP socket goes to worker 0 only */
	if (w->id == 0 && cfg->server.has_admin &&
	    add_lsock(w, &cfg->server.admin, admin_listener, cfg->server.user, &admin_file, err,
		      len) < 0)
		return -1;
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];

		for (size_t j = 0; j < l->nlisten; j++)
			if (add_lsock(w, &l->listen[j], l, "", NULL, err, len) < 0)
				return -1;
	}
	return 0;
}

/* After binding: the ports below 1024 are open, root is no longer needed. */
static int drop_privileges(const char *user)
{
	struct passwd *pw = getpwnam(user);

	if (!pw) {
		fprintf(stderr, "mxlb: no user named %s\n", user);
		return -1;
	}
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		fprintf(stderr, "mxlb: cannot become %s: %s\n", user, strerror(errno));
		return -1;
	}
	if (pw->pw_uid != 0 && setuid(0) == 0) {
		fprintf(stderr, "mxlb: could regain root after becoming %s\n", user);
		return -1;
	}
	log_info("user", "running as %s (uid %u)", user, (unsigned)pw->pw_uid);
	return 0;
}

static void free_lsocks(struct lsock *ls)
{
	while (ls) {
		struct lsock *next = ls->next;

		close(ls->fd);
		free(ls);
		ls = next;
	}
}

/* What the configuration allows but an operator should hear about: at
 * --check on stderr, at start and reload in the log. */
static void config_warnings(const struct config *cfg, void (*emit)(const char *msg))
{
	const struct cfg_server *s = &cfg->server;
	char msg[ERR_MAX];
	struct stat st;

	if (s->has_admin && !config_addr_is_local(&s->admin)) {
		snprintf(msg, sizeof(msg),
			 "%s:%u:%u: warning: server.admin.listen: %s is reachable beyond this host; "
			 "%s, or listen on loopback or unix:/run/mxlb/admin.sock",
			 cfg->path, s->admin_line ? s->admin_line : 1,
			 s->admin_column ? s->admin_column : 1, s->admin.text,
			 *s->admin_token ? "keep it behind a firewall"
					 : "its POST actions are refused without server.admin.token");
		emit(msg);
	}
	if (*s->admin_token && stat(cfg->path, &st) == 0 && S_ISREG(st.st_mode) &&
	    (st.st_mode & S_IROTH)) {
		snprintf(msg, sizeof(msg),
			 "%s: warning: the file holds server.admin.token and anyone can read it "
			 "(chmod o-r)",
			 cfg->path);
		emit(msg);
	}
}

static void warn_stderr(const char *msg)
{
	fprintf(stderr, "%s\n", msg);
}

static void warn_log(const char *msg)
{
	log_warn("config", "%s", msg);
}

/*
 * SIGHUP: read the file again. An invalid file changes nothing. Sockets are
 * bound here for addresses that are new, so a bind error also changes
 * nothing; then every worker switches on its own thread, and the old
 * runtime goes when its last session ends.
 */
static void reload(struct worker *workers, uint32_t n, const char *path)
{
	char err[ERR_MAX];
	struct config *cfg = config_load(path, err, sizeof(err));
	struct runtime *rt, *old = mxlb_rt;
	struct reload_arg *args;
	const struct cfg_server *os = &old->cfg->server;
	struct sock_file made = { 0 };
	bool admin_moves;

	if (!cfg) {
		log_error("reload", "%s; the configuration is unchanged", err);
		return;
	}
	if (cfg->server.workers != n || strcmp(cfg->server.user, os->user))
		log_warn("reload", "server.workers and server.user change only at a restart");
	rt = runtime_new(cfg, err, sizeof(err));
	if (!rt) {
		log_error("reload", "%s; the configuration is unchanged", err);
		config_free(cfg);
		return;
	}
	args = calloc(n, sizeof(*args));
	if (!args) {
		log_error("reload", "out of memory; the configuration is unchanged");
		runtime_unref(rt);
		return;
	}
	if (probe_new(cfg, old->cfg, err, sizeof(err)) < 0) {
		log_error("reload", "%s; the configuration is unchanged", err);
		free(args);
		runtime_unref(rt);
		return;
	}
	admin_moves = cfg->server.has_admin != os->has_admin ||
		      (os->has_admin && (os->admin.len != cfg->server.admin.len ||
					 memcmp(&os->admin.ss, &cfg->server.admin.ss, os->admin.len)));
	if (admin_moves && cfg->server.has_admin && held(old->cfg, &cfg->server.admin)) {
		log_error("reload", "%s (admin) is an address of the running listeners: move them "
				    "in a reload of its own first; the configuration is unchanged",
			  cfg->server.admin.text);
		free(args);
		runtime_unref(rt);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct worker tmp = { .id = (int)i };
		int bad = 0;

		if (i == 0 && admin_moves && cfg->server.has_admin)
			bad = add_lsock(&tmp, &cfg->server.admin, admin_listener, os->user, &made,
					err, sizeof(err));
		for (size_t l = 0; !bad && l < cfg->nlisteners; l++)
			for (size_t j = 0; !bad && j < cfg->listeners[l].nlisten; j++)
				if (!listened_on(old->cfg, &cfg->listeners[l].listen[j]))
					bad = add_lsock(&tmp, &cfg->listeners[l].listen[j],
							&cfg->listeners[l], "", NULL, err, sizeof(err));
		args[i].rt = rt;
		args[i].fresh = tmp.lsocks;
		if (bad) {
			log_error("reload", "%s; the configuration is unchanged", err);
			for (uint32_t k = 0; k <= i; k++)
				free_lsocks(args[k].fresh);
			sock_file_remove(&made);
			free(args);
			runtime_unref(rt);
			return;
		}
	}
	for (uint32_t i = 0; i < n; i++)
		worker_reload(&workers[i], &args[i]);
	free(args);
	if (admin_moves) {
		/* worker 0 has closed the old admin socket */
		sock_file_remove(&admin_file);
		admin_file = made;
	}
	mxlb_rt = rt;
	runtime_unref(old);
	log_info("reload", "configuration reloaded from %s: %zu listeners, %zu pools", path,
		 cfg->nlisteners, cfg->npools);
	config_warnings(cfg, warn_log);
}

/* A start that fails before the workers run: what it bound, made on
 * disk and allocated goes. */
static int start_failed(struct worker *workers, struct proxy_worker *pws, uint32_t n)
{
	sock_file_remove(&admin_file);
	for (uint32_t i = 0; workers && pws && i < n; i++) {
		free_lsocks(workers[i].lsocks);
		if (pws[i].rt)
			runtime_unref(pws[i].rt);
	}
	free(workers);
	free(pws);
	runtime_unref(mxlb_rt);
	return 2;
}

static pthread_barrier_t started;

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	mxlb_rt = ((struct proxy_worker *)w->proxy)->rt;
	w->init_err = worker_init(w);
	pthread_barrier_wait(&started);
	if (w->init_err < 0)
		return NULL;
	/* a second wait: main decides whether every worker came up */
	pthread_barrier_wait(&started);
	if (!w->stopping)
		worker_run(w);
	return NULL;
}

/* One clear line when the kernel or a policy refuses io_uring. */
static void probe_io_uring(void)
{
	struct io_uring ring;
	int ret = io_uring_queue_init(4, &ring, 0);

	if (ret < 0) {
		fprintf(stderr,
			"mxlb: io_uring is unavailable (%s): check kernel.io_uring_disabled "
			"and any seccomp policy\n",
			strerror(-ret));
		exit(2);
	}
	io_uring_queue_exit(&ring);
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "check", no_argument, NULL, 'k' },
		{ "version", no_argument, NULL, 'V' },      { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = "/etc/mxlb/mxlb.yaml";
	char err[ERR_MAX];
	bool check = false;
	struct config *cfg;
	struct worker *workers;
	struct proxy_worker *pws;
	sigset_t sigs;
	uint32_t n;
	int c, sig;

	while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'k':
			check = true;
			break;
		case 'V':
			printf("mxlb %s\n", MXLB_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 1;
	}
	cfg = config_load(path, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* certificates and keys load with the runtime: --check reads them too */
	mxlb_rt = runtime_new(cfg, err, sizeof(err));
	if (!mxlb_rt) {
		fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return 1;
	}
	if (check) {
		config_warnings(cfg, warn_stderr);
		fprintf(stderr, "%s: configuration is valid\n", path);
		runtime_unref(mxlb_rt);
		return 0;
	}
	log_setup((enum log_level)cfg->server.log_level, cfg->server.log_format == CFG_LOG_JSON);
	config_warnings(cfg, warn_log);
	probe_io_uring();
	raise_nofile();
	session_seed_ids(((uint64_t)time(NULL) << 24) ^ ((uint64_t)getpid() << 8));

	/* Signals go to this thread only, through sigwait below. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	n = cfg->server.workers;
	workers = calloc(n, sizeof(*workers));
	pws = calloc(n, sizeof(*pws));
	if (!workers || !pws)
		return start_failed(workers, pws, n);
	if (probe_new(cfg, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "mxlb: %s\n", err);
		return start_failed(workers, pws, n);
	}
	for (uint32_t i = 0; i < n; i++) {
		worker_setup(&workers[i]);
		workers[i].id = (int)i;
		workers[i].ops = &proxy_worker_ops;
		workers[i].proxy = &pws[i];
		workers[i].shutdown_timeout_ms = cfg->server.shutdown_timeout;
		pws[i].w = &workers[i];
		slab_init(&pws[i].session_slab, sizeof(struct session));
		pws[i].rt = mxlb_rt;
		runtime_ref(mxlb_rt);
		if (worker_listen(&workers[i], cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "mxlb: %s\n", err);
			return start_failed(workers, pws, n);
		}
	}
	if (*cfg->server.user && drop_privileges(cfg->server.user) < 0)
		return start_failed(workers, pws, n);
	pthread_barrier_init(&started, NULL, n + 1);
	for (uint32_t i = 0; i < n; i++) {
		if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
			fprintf(stderr, "mxlb: cannot start a worker thread\n");
			sock_file_remove(&admin_file);
			return 2;
		}
	}
	pthread_barrier_wait(&started);
	for (uint32_t i = 0; i < n; i++) {
		if (workers[i].init_err < 0) {
			fprintf(stderr, "mxlb: io_uring setup failed: %s\n",
				strerror(-workers[i].init_err));
			sock_file_remove(&admin_file);
			return 2;
		}
	}
	pthread_barrier_wait(&started);
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nlisten; j++)
			log_info("listen", "listener %s on %s (%u workers)", cfg->listeners[i].name,
				 cfg->listeners[i].listen[j].text, n);

	for (;;) {
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig == SIGHUP)
			reload(workers, n, path);
	}
	cfg = NULL; /* a reload may have freed it: mxlb_rt->cfg is current */
	log_info("stop", "stopping: no new sessions; relaying sessions have %u ms to finish",
		 mxlb_rt->cfg->server.shutdown_timeout);
	for (uint32_t i = 0; i < n; i++)
		worker_request_stop(&workers[i]);
	for (uint32_t i = 0; i < n; i++) {
		pthread_join(workers[i].thread, NULL);
		worker_fini(&workers[i]);
		slab_destroy(&pws[i].session_slab);
		runtime_unref(pws[i].rt);
	}
	sock_file_remove(&admin_file);
	log_info("stop", "stopped");
	free(workers);
	free(pws);
	runtime_unref(mxlb_rt);
	mxlb_rt = NULL;
	return 0;
}
