/* main.c - the command line, worker threads, signals and reloads (SPEC §2);
 * the listening sockets are sockets.c's.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proxy/proxy.h"

#define MXLB_VERSION "0.1.0"
#define ERR_MAX (CFG_ERR_MAX + 512) /* a config error, or an address and why it failed */

static struct sock_file admin_file;

static void usage(FILE *f)
{
	fprintf(f, "usage: mxlb [-c FILE] [--check]\n"
		   "  -c, --config FILE  configuration (default /etc/mxlb/mxlb.yaml)\n"
		   "      --check        validate the configuration and exit (0 valid, 1 invalid)\n"
		   "      --version      print the version\n"
		   "  -h, --help         this text\n");
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

/* What the configuration allows but an operator should hear about: at
 * --check on stderr, at start and reload in the log. */
static void config_warnings(const struct config *cfg, void (*emit)(const char *msg))
{
	const struct cfg_server *s = &cfg->server;
	char msg[ERR_MAX];
	struct stat st;

	if (s->has_admin && !config_addr_is_local(&s->admin)) {
		snprintf(
			msg, sizeof(msg),
			"%s:%u:%u: warning: server.admin.listen: %s is reachable beyond this host; "
			"%s, or listen on loopback or unix:/run/mxlb/admin.sock",
			cfg->path, s->admin_line ? s->admin_line : 1,
			s->admin_column ? s->admin_column : 1, s->admin.text,
			*s->admin_token
				? "keep it behind a firewall"
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
	if (sock_probe_new(cfg, old->cfg, err, sizeof(err)) < 0) {
		log_error("reload", "%s; the configuration is unchanged", err);
		free(args);
		runtime_unref(rt);
		return;
	}
	admin_moves =
		cfg->server.has_admin != os->has_admin ||
		(os->has_admin && (os->admin.len != cfg->server.admin.len ||
				   memcmp(&os->admin.ss, &cfg->server.admin.ss, os->admin.len)));
	if (admin_moves && cfg->server.has_admin && sock_held(old->cfg, &cfg->server.admin)) {
		log_error("reload",
			  "%s (admin) is an address of the running listeners: move them "
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
			bad = sock_add(&tmp, &cfg->server.admin, NULL, os->user, &made, err,
				       sizeof(err));
		for (size_t l = 0; !bad && l < cfg->nlisteners; l++)
			for (size_t j = 0; !bad && j < cfg->listeners[l].nlisten; j++)
				if (!sock_listened_on(old->cfg, &cfg->listeners[l].listen[j]))
					bad = sock_add(&tmp, &cfg->listeners[l].listen[j],
						       &cfg->listeners[l], "", NULL, err,
						       sizeof(err));
		args[i].rt = rt;
		args[i].fresh = tmp.lsocks;
		if (bad) {
			log_error("reload", "%s; the configuration is unchanged", err);
			for (uint32_t k = 0; k <= i; k++)
				sock_free_all(args[k].fresh);
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
		sock_free_all(workers[i].lsocks);
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
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
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
	if (sock_probe_new(cfg, NULL, err, sizeof(err)) < 0) {
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
		if (sock_worker_listen(&workers[i], cfg, &admin_file, err, sizeof(err)) < 0) {
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
