/* main.c - the command line, worker threads, signals and reloads (SPEC §2);
 * the listening sockets are sockets.c's.
 *
 * Exit status: 0 after a clean stop (and for --check of a valid file,
 * --dump, --version, --help), 1 for a configuration error, 2 for a runtime
 * failure, 64 (EX_USAGE, sysexits.h) for a command line it cannot read.
 * Once running, every line on stderr is a log line (core/log.h), in the
 * configured format; before the file is read, text. --check and --dump
 * print for a person or a script instead: FILE:LINE:COLUMN lines on
 * stderr, the YAML on stdout.
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
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "proxy/proxy.h"

#define ERR_MAX (CFG_ERR_MAX + 512) /* config errors, or an address and why it failed */

enum { EXIT_CONFIG = 1, EXIT_RUNTIME = 2 };

static struct sock_file admin_file;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: mxlb [-c FILE] [--check | --dump]\n"
		"       mxlb --version | --help\n"
		"  -c, --config FILE  configuration (default /etc/mxlb/mxlb.yaml)\n"
		"      --check        validate the configuration and exit (0 valid, 1 invalid)\n"
		"      --dump         print the effective configuration, every default filled in\n"
		"  -V, --version      print the versions of mxlb and its libraries, and whether\n"
		"                     this kernel's io_uring has what mxlb needs\n"
		"  -h, --help         this text\n"
		"exit status: 0 ok, 1 configuration error, 2 runtime failure, 64 usage error\n");
}

/* Config errors come one a line (config.h): one log line each. */
static void log_lines(enum log_level level, const char *event, const char *text, const char *suffix)
{
	while (*text) {
		size_t n = strcspn(text, "\n");

		log_msg(level, event, "%.*s%s", (int)n, text, suffix);
		text += n;
		text += *text == '\n';
	}
}

/* Started as that user already (systemd's User=, setpriv, runuser): there
 * is nothing to drop, and setgroups() would fail without CAP_SETGID. Root
 * naming root still goes through the drop, which clears its groups. */
static bool already_user(const struct passwd *pw)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	return pw->pw_uid != 0 && getresuid(&ru, &eu, &su) == 0 && getresgid(&rg, &eg, &sg) == 0 &&
	       ru == pw->pw_uid && eu == pw->pw_uid && su == pw->pw_uid && rg == pw->pw_gid &&
	       eg == pw->pw_gid && sg == pw->pw_gid;
}

/* After binding: the ports below 1024 are open, root is no longer needed. */
static int drop_privileges(const char *user)
{
	struct passwd *pw = getpwnam(user);

	if (!pw) {
		log_error("user", "no user named %s", user);
		return -1;
	}
	if (already_user(pw)) {
		log_info("user", "running as %s (uid %u) already", user, (unsigned)pw->pw_uid);
		return 0;
	}
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		log_error("user", "cannot become %s: %s", user, strerror(errno));
		return -1;
	}
	if (pw->pw_uid != 0 && setuid(0) == 0) {
		log_error("user", "could regain root after becoming %s", user);
		return -1;
	}
	log_info("user", "running as %s (uid %u)", user, (unsigned)pw->pw_uid);
	return 0;
}

/* What the configuration allows but an operator should hear about: at
 * --check on stderr, at start and reload in the log. The loader's own
 * (cfg->warnings: weights, loops) first, in file order. */
static void config_warnings(const struct config *cfg, void (*emit)(const char *msg))
{
	const struct cfg_server *s = &cfg->server;
	char msg[ERR_MAX];
	struct stat st;

	for (const char *w = cfg->warnings; w && *w;) {
		size_t n = strcspn(w, "\n");

		snprintf(msg, sizeof(msg), "%.*s", (int)n, w);
		emit(msg);
		w += n;
		w += *w == '\n';
	}

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
		log_lines(LOG_ERROR, "reload", err, "; the configuration is unchanged");
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
	log_setup((enum log_level)cfg->server.log_level, cfg->server.log_format == CFG_LOG_JSON);
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
	return EXIT_RUNTIME;
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
	char why[200];

	if (io_uring_check(why, sizeof(why)) < 0) {
		log_error("io_uring",
			  "io_uring is unavailable: %s; check kernel.io_uring_disabled and any "
			  "seccomp policy (mxlb --version tells more)",
			  why);
		exit(EXIT_RUNTIME);
	}
}

/* The start line: what this process is about to serve. */
static void log_start(const struct config *cfg, const char *path)
{
	const struct cfg_server *s = &cfg->server;
	char listeners[LOG_LINE_MAX] = "";
	struct logline ll;
	size_t used = 0;

	/* "name=addr,addr name=addr": one field, as flat text and JSON take it */
	for (size_t i = 0; i < cfg->nlisteners && used < sizeof(listeners); i++) {
		const struct cfg_listener *l = &cfg->listeners[i];

		used += (size_t)snprintf(listeners + used, sizeof(listeners) - used,
					 "%s%s=", i ? " " : "", l->name);
		for (size_t j = 0; j < l->nlisten && used < sizeof(listeners); j++)
			used += (size_t)snprintf(listeners + used, sizeof(listeners) - used, "%s%s",
						 j ? "," : "", l->listen[j].text);
	}
	if (!log_begin(&ll, LOG_INFO, "start"))
		return;
	log_kv_str(&ll, "version", MXLB_VERSION);
	log_kv_str(&ll, "config", path);
	log_kv_u64(&ll, "pid", (uint64_t)getpid());
	log_kv_u64(&ll, "workers", s->workers);
	log_kv_str(&ll, "admin", s->has_admin ? s->admin.text : NULL);
	log_kv_str(&ll, "user", *s->user ? s->user : NULL);
	log_kv_str(&ll, "listeners", listeners);
	log_end(&ll);
}

static void log_ready(const struct config *cfg)
{
	struct logline ll;
	size_t n = 0;

	for (size_t i = 0; i < cfg->nlisteners; i++)
		n += cfg->listeners[i].nlisten;
	if (!log_begin(&ll, LOG_INFO, "ready"))
		return;
	log_kv_u64(&ll, "listeners", cfg->nlisteners);
	log_kv_u64(&ll, "addresses", n);
	log_kv_u64(&ll, "workers", cfg->server.workers);
	log_kv_str(&ll, "msg", "listening; accepting sessions");
	log_end(&ll);
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* The command line: -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, const char **path, bool *check, bool *dump)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "check", no_argument, NULL, 'k' },
		{ "dump", no_argument, NULL, 'd' },	    { "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },	    { NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			*path = optarg;
			break;
		case 'k':
			*check = true;
			break;
		case 'd':
			*dump = true;
			break;
		case 'V':
			/* what the probe found is printed; the version was asked for */
			version_print(stdout);
			return EXIT_SUCCESS;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		default: /* getopt said what it did not take */
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mxlb: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return EX_USAGE;
	}
	return -1;
}

int main(int argc, char **argv)
{
	const char *path = "/etc/mxlb/mxlb.yaml";
	char err[ERR_MAX];
	bool check = false, dump = false;
	struct config *cfg;
	struct worker *workers;
	struct proxy_worker *pws;
	sigset_t sigs;
	uint32_t n;
	int sig, r;

	/* text until the file says otherwise; is stderr the journal? */
	log_setup(LOG_INFO, false);
	r = parse_args(argc, argv, &path, &check, &dump);
	if (r >= 0)
		return r;
	cfg = config_load(path, err, sizeof(err));
	if (!cfg) {
		if (check || dump)
			fprintf(stderr, "%s\n", err);
		else
			log_lines(LOG_ERROR, "config", err, "");
		return EXIT_CONFIG;
	}
	if (dump) {
		config_dump(stdout, cfg);
		if (fflush(stdout) != 0) {
			fprintf(stderr, "mxlb: cannot write the configuration: %s\n",
				strerror(errno));
			config_free(cfg);
			return EXIT_RUNTIME;
		}
		if (!check) {
			config_free(cfg);
			return EXIT_SUCCESS;
		}
	}
	/* from here on, what the file says: a certificate that does not load
	 * is logged in the configured format already */
	if (!check)
		log_setup((enum log_level)cfg->server.log_level,
			  cfg->server.log_format == CFG_LOG_JSON);
	/* certificates and keys load with the runtime: --check reads them too */
	mxlb_rt = runtime_new(cfg, err, sizeof(err));
	if (!mxlb_rt) {
		if (check)
			fprintf(stderr, "%s\n", err);
		else
			log_lines(LOG_ERROR, "config", err, "");
		config_free(cfg);
		return EXIT_CONFIG;
	}
	if (check) {
		config_warnings(cfg, warn_stderr);
		fprintf(stderr, "%s: configuration is valid\n", path);
		runtime_unref(mxlb_rt);
		return EXIT_SUCCESS;
	}
	probe_io_uring();
	log_start(cfg, path);
	config_warnings(cfg, warn_log);
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
		log_error("listen", "%s", err);
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
			log_error("listen", "%s", err);
			return start_failed(workers, pws, n);
		}
	}
	if (*cfg->server.user && drop_privileges(cfg->server.user) < 0)
		return start_failed(workers, pws, n);
	pthread_barrier_init(&started, NULL, n + 1);
	for (uint32_t i = 0; i < n; i++) {
		if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
			log_error("worker", "cannot start a worker thread");
			sock_file_remove(&admin_file);
			return EXIT_RUNTIME;
		}
	}
	pthread_barrier_wait(&started);
	for (uint32_t i = 0; i < n; i++) {
		if (workers[i].init_err < 0) {
			log_error("worker", "io_uring setup failed: %s",
				  strerror(-workers[i].init_err));
			sock_file_remove(&admin_file);
			return EXIT_RUNTIME;
		}
	}
	pthread_barrier_wait(&started);
	/* every socket listens (the kernel queues connections from here on) */
	log_ready(cfg);
	notify_ready(cfg, "started");

	for (;;) {
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig == SIGHUP) {
			struct runtime *before = mxlb_rt;

			notify_reloading();
			reload(workers, n, path);
			stats_reload_done(mxlb_rt != before);
			/* a failed reload keeps the old runtime, which still serves */
			notify_ready(mxlb_rt->cfg,
				     mxlb_rt != before
					     ? "reloaded"
					     : "reload failed, previous configuration kept");
		}
	}
	notify_stopping(mxlb_rt->cfg->server.shutdown_timeout);
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
