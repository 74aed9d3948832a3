/* SPDX-License-Identifier: MIT */
/*
 * The logind notifier over a real D-Bus, without a real logind: a private
 * dbus-daemon stands in for the system bus (DBUS_SYSTEM_BUS_ADDRESS, which
 * sd_bus_open_system() honours) and a thread of this test plays
 * systemd-logind: it owns org.freedesktop.login1, serves Manager.Inhibit
 * (answering with the write end of a pipe, as logind does with its FIFO, so a
 * hangup on the read end is the release of the inhibitor) and emits
 * PrepareForSleep.
 *
 * Checked: the library takes a "sleep"/"delay" inhibitor; on
 * PrepareForSleep(true) the device goes through prepare + suspend and the
 * reference device is in D3cold BEFORE the inhibitor is released (the delay
 * contract: the host may sleep only once we are done); on
 * PrepareForSleep(false) every BO kind holds its bytes, the device is back
 * in D0 and only then is a new inhibitor taken; a PrepareForSleep(false)
 * without a preceding true leaves exactly one inhibitor held; a spoofed
 * PrepareForSleep from another connection is ignored; a device the
 * application left PREPARED is suspended, one it SUSPENDED itself is not
 * resumed behind its back; ugpu_logind_stop()
 * releases the inhibitor, and no fd or memory is left behind.
 *
 * ugpud --logind does the same for all its clients (test_daemon_follows_logind):
 * one delay inhibitor; at PrepareForSleep(true) its device is suspended, the
 * clients told (their requests -EAGAIN, the power state D3cold) before the
 * inhibitor goes; at PrepareForSleep(false) it is resumed with every byte and
 * a new inhibitor taken; a device an administrator suspended is left so
 * over a sleep (not resumed at the wake); the daemon's exit releases the
 * inhibitor.
 *
 * The daemon is required: when dbus-daemon is installed but does not start,
 * the test fails. Only when the binary is absent (or libugpu was built
 * without libsystemd) does it exit 77, saying why.
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "integration/test_bo_common.h"
#include "base/sock.h"
#include "base/test_point.h"
#include "src/remote.h"
#include "src/ugpud_proto.h"

#if defined(__has_include)
#if __has_include(<systemd/sd-bus.h>)
#define HAVE_SD_BUS 1
#endif
#endif

#ifdef HAVE_SD_BUS
#include <systemd/sd-bus.h>

extern char **environ;

#define MiB (1ull << 20)
#define DBUS_DAEMON "/usr/bin/dbus-daemon"
#define WAIT_MS 10000 /* any one step: generous for the sanitizer builds */

#define LOGIND_NAME "org.freedesktop.login1"
#define LOGIND_PATH "/org/freedesktop/login1"
#define LOGIND_IFACE "org.freedesktop.login1.Manager"

/* ---- the private bus ---------------------------------------------------- */

static struct {
	pid_t pid;
	char dir[64];
	char conf[128];
	char sock[128];
	char address[256];
} bus_d = { .pid = -1 };

static int write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	int ret = 0;

	if (!fp)
		return -errno;
	if (fputs(text, fp) < 0)
		ret = -EIO;
	if (fclose(fp) && !ret)
		ret = -EIO;
	return ret;
}

static void bus_daemon_stop(void)
{
	uint64_t t0 = fx_now_ms();

	if (bus_d.pid > 0) {
		kill(bus_d.pid, SIGTERM);
		while (waitpid(bus_d.pid, NULL, WNOHANG) == 0) {
			if (fx_now_ms() - t0 > 5000) {
				kill(bus_d.pid, SIGKILL);
				waitpid(bus_d.pid, NULL, 0); /* SIGKILL: immediate */
				break;
			}
			usleep(10 * 1000);
		}
		bus_d.pid = -1;
	}
	if (bus_d.sock[0])
		unlink(bus_d.sock);
	if (bus_d.conf[0])
		unlink(bus_d.conf);
	if (bus_d.dir[0])
		rmdir(bus_d.dir);
}

/*
 * Start dbus-daemon on a socket in a temp dir with a config that lets
 * anyone own any name and send anything (the test is its only user), and
 * wait (bounded) for it to print its address, i.e. to listen.
 * Returns 0, or -errno with the reason printed.
 */
static int bus_daemon_start(void)
{
	static const char conf_fmt[] =
		"<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
		" \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
		"<busconfig>\n"
		"  <type>ugpu-test</type>\n"
		"  <listen>unix:path=%s</listen>\n"
		"  <auth>EXTERNAL</auth>\n"
		"  <policy context=\"default\">\n"
		"    <allow user=\"*\"/>\n"
		"    <allow own=\"*\"/>\n"
		"    <allow send_destination=\"*\"/>\n"
		"    <allow receive_sender=\"*\"/>\n"
		"  </policy>\n"
		"</busconfig>\n";
	char conf[1024], arg_conf[160], *argv[6];
	posix_spawn_file_actions_t fa;
	int pfd[2], ret, n = 0;
	size_t len = 0;
	uint64_t t0;

	snprintf(bus_d.dir, sizeof(bus_d.dir), "/tmp/ugpu-dbus-XXXXXX");
	if (!mkdtemp(bus_d.dir)) {
		ret = -errno;
		fprintf(stderr, "logind-bus: mkdtemp: %s\n", strerror(-ret));
		bus_d.dir[0] = 0;
		return ret;
	}
	snprintf(bus_d.conf, sizeof(bus_d.conf), "%s/bus.conf", bus_d.dir);
	snprintf(bus_d.sock, sizeof(bus_d.sock), "%s/bus", bus_d.dir);
	snprintf(conf, sizeof(conf), conf_fmt, bus_d.sock);
	ret = write_file(bus_d.conf, conf);
	if (ret) {
		fprintf(stderr, "logind-bus: cannot write %s: %s\n", bus_d.conf, strerror(-ret));
		return ret;
	}
	/* The address comes back on fd 3 of the daemon: the pipe's write end
	 * is moved there (it is never 3 itself here: stdio and the test's own
	 * files come first, and the check below makes sure). */
	if (pipe2(pfd, O_CLOEXEC))
		return -errno;
	if (pfd[1] == 3) {
		int w = fcntl(pfd[1], F_DUPFD_CLOEXEC, 10);

		close(pfd[1]);
		pfd[1] = w;
	}
	snprintf(arg_conf, sizeof(arg_conf), "--config-file=%s", bus_d.conf);
	argv[0] = "dbus-daemon";
	argv[1] = arg_conf;
	argv[2] = "--nofork";
	argv[3] = "--nosyslog";
	argv[4] = "--print-address=3";
	argv[5] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 3);
	/* Not our stdout/stderr: if this test dies before it stops the daemon
	 * (a sanitizer's abort), a daemon holding them would keep ctest
	 * waiting for their end until its timeout. */
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	ret = -posix_spawn(&bus_d.pid, DBUS_DAEMON, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	if (ret) {
		bus_d.pid = -1;
		close(pfd[0]);
		fprintf(stderr, "logind-bus: cannot spawn %s: %s\n", DBUS_DAEMON, strerror(-ret));
		return ret;
	}
	/* One line: the address, then a newline. */
	t0 = fx_now_ms();
	while (!memchr(bus_d.address, '\n', len)) {
		struct pollfd p = { .fd = pfd[0], .events = POLLIN };
		int left = WAIT_MS - (int)(fx_now_ms() - t0);

		if (left <= 0 || poll(&p, 1, left) <= 0) {
			fprintf(stderr, "logind-bus: dbus-daemon printed no address within %d ms\n",
				WAIT_MS);
			ret = -ETIMEDOUT;
			break;
		}
		n = (int)read(pfd[0], bus_d.address + len, sizeof(bus_d.address) - 1 - len);
		if (n <= 0) {
			fprintf(stderr, "logind-bus: dbus-daemon exited before printing its address\n");
			ret = -EIO;
			break;
		}
		len += (size_t)n;
		if (len >= sizeof(bus_d.address) - 1) {
			ret = -E2BIG;
			break;
		}
	}
	close(pfd[0]);
	if (ret)
		return ret;
	*strchr(bus_d.address, '\n') = 0;
	return 0;
}

static int bus_connect(sd_bus **out)
{
	sd_bus *bus = NULL;
	int ret = sd_bus_new(&bus);

	if (ret < 0)
		return ret;
	ret = sd_bus_set_address(bus, bus_d.address);
	if (ret >= 0)
		ret = sd_bus_set_bus_client(bus, 1);
	if (ret >= 0)
		ret = sd_bus_start(bus);
	if (ret < 0) {
		sd_bus_unref(bus);
		return ret;
	}
	sd_bus_set_method_call_timeout(bus, WAIT_MS * 1000ull);
	*out = bus;
	return 0;
}

/* ---- the fake logind ---------------------------------------------------- */

#define MAX_INH 16

/* One inhibitor handed out; the state fields sample the device when the
 * Inhibit call came in and when the pipe hung up. */
struct inh {
	char what[32], who[32], why[96], mode[16];
	int rfd; /* our end; -1 once hung up (and closed) */
	bool hup;
	uint32_t state_at_take, state_at_hup;
	enum sim_power_state power_at_take, power_at_hup;
	int remote_power_at_hup; /* fake.remote's power state then, or -1 */
};

/*
 * struct fake - the logind stand-in.
 * Locking: @lock guards @inh, @n_inh, @ready, @err (with @cond signalled on
 * every change); @bus, @cmd[0] are the thread's own; @cmd[1] is the test's.
 * The rfds are read by the thread only. @remote (under @lock): a device
 * through ugpud whose power state is sampled at each hangup too (its
 * connection's own lock serialises the calls of both threads), or NULL.
 */
struct fake {
	struct fx *f;
	struct ugpu_device *remote;
	pthread_t thread;
	sd_bus *bus;
	int cmd[2];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct inh inh[MAX_INH];
	int n_inh;
	bool ready;
	char err[160];
};

static void sample(struct fake *fk, uint32_t *state, enum sim_power_state *power)
{
	struct ugpu_pm_stats st = { .size = sizeof(st) };
	struct sim_state ss;

	*state = ugpu_device_pm_stats(fk->f->dev, &st) ? 0xffffffffu : st.state;
	*power = sim_state(fk->f->sim, 0, &ss) ? (enum sim_power_state)-1 : ss.power;
}

static int on_inhibit(sd_bus_message *m, void *user, sd_bus_error *err)
{
	struct fake *fk = user;
	const char *what, *who, *why, *mode;
	struct inh rec = { .rfd = -1 };
	int pfd[2], ret;

	ret = sd_bus_message_read(m, "ssss", &what, &who, &why, &mode);
	if (ret < 0)
		return ret;
	if (pipe2(pfd, O_CLOEXEC))
		return sd_bus_error_set_errno(err, errno);
	snprintf(rec.what, sizeof(rec.what), "%s", what);
	snprintf(rec.who, sizeof(rec.who), "%s", who);
	snprintf(rec.why, sizeof(rec.why), "%s", why);
	snprintf(rec.mode, sizeof(rec.mode), "%s", mode);
	rec.rfd = pfd[0];
	sample(fk, &rec.state_at_take, &rec.power_at_take);
	pthread_mutex_lock(&fk->lock);
	if (fk->n_inh < MAX_INH) {
		fk->inh[fk->n_inh++] = rec;
		rec.rfd = -1;
	} else {
		snprintf(fk->err, sizeof(fk->err), "more than %d inhibitors taken", MAX_INH);
	}
	pthread_cond_broadcast(&fk->cond);
	pthread_mutex_unlock(&fk->lock);
	if (rec.rfd >= 0)
		close(rec.rfd);
	/* The reply carries a dup of the write end; ours goes at once so the
	 * client's copy is the only one left. */
	ret = sd_bus_reply_method_return(m, "h", pfd[1]);
	close(pfd[1]);
	return ret;
}

static const sd_bus_vtable fake_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD("Inhibit", "ssss", "h", on_inhibit, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_SIGNAL("PrepareForSleep", "b", 0),
	SD_BUS_VTABLE_END,
};

static void fake_fail(struct fake *fk, const char *what, int ret)
{
	pthread_mutex_lock(&fk->lock);
	if (!fk->err[0])
		snprintf(fk->err, sizeof(fk->err), "%s: %s", what, strerror(-ret));
	pthread_cond_broadcast(&fk->cond);
	pthread_mutex_unlock(&fk->lock);
}

/* Commands on fk->cmd: 'T' / 'F' emit PrepareForSleep(true/false), 'Q' quits. */
static void *fake_thread(void *arg)
{
	struct fake *fk = arg;
	sd_bus_slot *slot = NULL;
	int ret;

	ret = bus_connect(&fk->bus);
	if (ret < 0) {
		fake_fail(fk, "fake logind: connect", ret);
		return NULL;
	}
	ret = sd_bus_add_object_vtable(fk->bus, &slot, LOGIND_PATH, LOGIND_IFACE, fake_vtable, fk);
	if (ret >= 0)
		ret = sd_bus_request_name(fk->bus, LOGIND_NAME, 0);
	if (ret < 0) {
		fake_fail(fk, "fake logind: serve " LOGIND_NAME, ret);
		goto out_bus;
	}
	pthread_mutex_lock(&fk->lock);
	fk->ready = true;
	pthread_cond_broadcast(&fk->cond);
	pthread_mutex_unlock(&fk->lock);

	for (;;) {
		struct pollfd p[2 + MAX_INH];
		int idx[MAX_INH], np = 2, i, n;
		char c;

		while ((ret = sd_bus_process(fk->bus, NULL)) > 0)
			;
		if (ret < 0) {
			fake_fail(fk, "fake logind: bus", ret);
			break;
		}
		p[0] = (struct pollfd){ .fd = sd_bus_get_fd(fk->bus),
					.events = (short)sd_bus_get_events(fk->bus) };
		p[1] = (struct pollfd){ .fd = fk->cmd[0], .events = POLLIN };
		pthread_mutex_lock(&fk->lock);
		n = fk->n_inh;
		pthread_mutex_unlock(&fk->lock);
		for (i = 0; i < n; i++) { /* rfd and hup change only on this thread */
			if (fk->inh[i].rfd < 0)
				continue;
			idx[np - 2] = i;
			p[np++] = (struct pollfd){ .fd = fk->inh[i].rfd, .events = POLLIN };
		}
		if (poll(p, (nfds_t)np, 100) < 0 && errno != EINTR) {
			fake_fail(fk, "fake logind: poll", -errno);
			break;
		}
		for (i = 2; i < np; i++) {
			struct inh *h = &fk->inh[idx[i - 2]];
			struct ugpu_device *rdev;
			int rpower;
			uint32_t state;
			enum sim_power_state power;

			if (!(p[i].revents & (POLLHUP | POLLERR | POLLIN)))
				continue;
			/* Nothing is ever written: readable means EOF, i.e. every
			 * copy of the write end is closed. */
			sample(fk, &state, &power);
			pthread_mutex_lock(&fk->lock);
			rdev = fk->remote;
			pthread_mutex_unlock(&fk->lock);
			rpower = -1;
			if (rdev) {
				struct ugpu_device_info di = { .size = sizeof(di) };

				if (!ugpu_device_query(rdev, &di))
					rpower = (int)di.power_state;
			}
			pthread_mutex_lock(&fk->lock);
			h->remote_power_at_hup = rpower;
			h->state_at_hup = state;
			h->power_at_hup = power;
			h->hup = true;
			close(h->rfd);
			h->rfd = -1;
			pthread_cond_broadcast(&fk->cond);
			pthread_mutex_unlock(&fk->lock);
		}
		if (!(p[1].revents & POLLIN) || read(fk->cmd[0], &c, 1) != 1)
			continue;
		if (c == 'Q')
			break;
		ret = sd_bus_emit_signal(fk->bus, LOGIND_PATH, LOGIND_IFACE, "PrepareForSleep", "b",
					 c == 'T');
		if (ret >= 0)
			ret = sd_bus_flush(fk->bus);
		if (ret < 0) {
			fake_fail(fk, "fake logind: emit PrepareForSleep", ret);
			break;
		}
	}
	sd_bus_slot_unref(slot);
out_bus:
	sd_bus_flush_close_unref(fk->bus);
	fk->bus = NULL;
	return NULL;
}

static void fake_cmd(struct fake *fk, char c)
{
	assert_int_equal(write(fk->cmd[1], &c, 1), 1);
}

/* Wait (bounded) until @cond_fn holds; false on timeout or fake error. */
static bool fake_wait(struct fake *fk, bool (*cond_fn)(struct fake *, int), int arg, int ms)
{
	struct timespec dl;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += ms / 1000;
	dl.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&fk->lock);
	while (!(ok = cond_fn(fk, arg)) && !fk->err[0])
		if (pthread_cond_timedwait(&fk->cond, &fk->lock, &dl))
			break;
	ok = cond_fn(fk, arg);
	if (fk->err[0])
		fprintf(stderr, "%s\n", fk->err);
	pthread_mutex_unlock(&fk->lock);
	return ok;
}

static bool c_ready(struct fake *fk, int a)
{
	(void)a;
	return fk->ready;
}

static bool c_taken(struct fake *fk, int n)
{
	return fk->n_inh >= n;
}

static bool c_hup(struct fake *fk, int i)
{
	return fk->n_inh > i && fk->inh[i].hup;
}

static bool c_all_hup(struct fake *fk, int a)
{
	int i;

	(void)a;
	for (i = 0; i < fk->n_inh; i++)
		if (!fk->inh[i].hup)
			return false;
	return true;
}

static int held(struct fake *fk)
{
	int i, n = 0;

	pthread_mutex_lock(&fk->lock);
	for (i = 0; i < fk->n_inh; i++)
		n += !fk->inh[i].hup;
	pthread_mutex_unlock(&fk->lock);
	return n;
}

static struct inh inh_get(struct fake *fk, int i)
{
	struct inh h;

	pthread_mutex_lock(&fk->lock);
	h = fk->inh[i];
	pthread_mutex_unlock(&fk->lock);
	return h;
}

static int n_taken(struct fake *fk)
{
	int n;

	pthread_mutex_lock(&fk->lock);
	n = fk->n_inh;
	pthread_mutex_unlock(&fk->lock);
	return n;
}

/* ---- fixture ------------------------------------------------------------ */

struct tfx {
	struct fx *f;
	struct fake fk;
	struct ugpu_logind *ln; /* stopped by teardown when a test failed */
};

static int setup(void **state)
{
	struct tfx *t = calloc(1, sizeof(*t));
	void *fs = NULL;

	if (!t || fx_setup_vram(&fs, 32 * MiB))
		return -1;
	t->f = fs;
	t->fk.f = t->f;
	pthread_mutex_init(&t->fk.lock, NULL);
	pthread_cond_init(&t->fk.cond, NULL);
	if (pipe2(t->fk.cmd, O_CLOEXEC) || pthread_create(&t->fk.thread, NULL, fake_thread, &t->fk))
		return -1;
	*state = t;
	if (!fake_wait(&t->fk, c_ready, 0, WAIT_MS)) {
		fprintf(stderr, "logind-bus: the fake logind did not come up\n");
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	struct tfx *t = *state;
	void *fs = t->f;
	int i;

	ugpu_logind_stop(t->ln);
	fake_cmd(&t->fk, 'Q');
	pthread_join(t->fk.thread, NULL);
	for (i = 0; i < t->fk.n_inh; i++)
		if (t->fk.inh[i].rfd >= 0)
			close(t->fk.inh[i].rfd);
	close(t->fk.cmd[0]);
	close(t->fk.cmd[1]);
	pthread_cond_destroy(&t->fk.cond);
	pthread_mutex_destroy(&t->fk.lock);
	fx_teardown(&fs);
	free(t);
	return 0;
}

/*
 * Open fds of the process other than memfds (BO backing store, which
 * suspend legitimately changes: evicted BOs stay in system memory); the
 * notifier's own would be sockets and pipes. With @print, list them all.
 */
static int count_fds(bool print)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char path[300], target[256];
		ssize_t len;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		target[len > 0 ? len : 0] = 0;
		if (print)
			fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
		n += strncmp(target, "/memfd:", 7) != 0;
	}
	closedir(d);
	return n;
}

static void pm_now(struct fx *f, struct ugpu_pm_stats *st, enum sim_power_state *power)
{
	struct sim_state ss;

	st->size = sizeof(*st);
	assert_int_equal(ugpu_device_pm_stats(f->dev, st), 0);
	assert_int_equal(sim_state(f->sim, 0, &ss), 0);
	*power = ss.power;
}

/* ---- the BO population: every kind (pop_make/pop_verify, test_bo_common.h) */

#define NOBJ (2 * K_NKINDS)

/* ---- tests -------------------------------------------------------------- */

static void assert_inhibitor_shape(const struct inh *h)
{
	assert_string_equal(h->what, "sleep");
	assert_string_equal(h->mode, "delay");
	assert_string_equal(h->who, "ugpu");
	assert_true(h->why[0] != 0);
}

/*
 * Two full sleep cycles driven by PrepareForSleep, then stop: the
 * inhibitor is released only once the device is in D3cold, retaken only
 * once it is back in D0 with every BO restored.
 */
static void test_sleep_cycles(void **state)
{
	struct tfx *t = *state;
	struct fx *f = t->f;
	struct fake *fk = &t->fk;
	struct ugpu_logind **ln = &t->ln;
	struct ugpu_pm_stats st;
	enum sim_power_state power;
	struct obj o[NOBJ];
	uint64_t cycles0;
	int fds0, cyc, i;

	pop_make(f, o, NOBJ, 9100, 5);
	pm_now(f, &st, &power);
	assert_int_equal(st.state, UGPU_PM_ACTIVE);
	assert_int_equal(power, SIM_POWER_D0);
	cycles0 = st.cycles;
	if (getenv("UGPU_TEST_LOG"))
		count_fds(true);
	fds0 = count_fds(false);

	assert_int_equal(ugpu_logind_start(f->dev, ln), 0);
	assert_non_null(*ln);
	/* Inhibit is a synchronous call inside start: recorded by now. */
	assert_int_equal(n_taken(fk), 1);
	{
		struct inh h = inh_get(fk, 0);

		assert_inhibitor_shape(&h);
		assert_false(h.hup);
		assert_int_equal(h.state_at_take, UGPU_PM_ACTIVE);
	}

	for (cyc = 0; cyc < 2; cyc++) {
		struct inh h;

		/* Sleep: released only after prepare + suspend, in D3cold. */
		fake_cmd(fk, 'T');
		if (!fake_wait(fk, c_hup, cyc, WAIT_MS))
			fail_msg("cycle %d: inhibitor %d not released within %d ms after "
				 "PrepareForSleep(true)", cyc, cyc, WAIT_MS);
		h = inh_get(fk, cyc);
		assert_int_equal(h.state_at_hup, UGPU_PM_SUSPENDED);
		assert_int_equal(h.power_at_hup, SIM_POWER_D3COLD);
		assert_int_equal(held(fk), 0); /* nothing else holds the sleep up */
		assert_int_equal(n_taken(fk), cyc + 1); /* no retake while asleep */
		pm_now(f, &st, &power);
		assert_int_equal(st.state, UGPU_PM_SUSPENDED);
		assert_int_equal(power, SIM_POWER_D3COLD);
		assert_true(st.backups_prepared > 0); /* prepare ran before suspend */
		assert_int_equal(st.backups_missed, 0);

		/* Wake: resumed (D0, restored) before the new inhibitor. */
		fake_cmd(fk, 'F');
		if (!fake_wait(fk, c_taken, cyc + 2, WAIT_MS))
			fail_msg("cycle %d: no new inhibitor within %d ms after PrepareForSleep(false)",
				 cyc, WAIT_MS);
		h = inh_get(fk, cyc + 1);
		assert_inhibitor_shape(&h);
		assert_false(h.hup);
		assert_int_equal(h.state_at_take, UGPU_PM_ACTIVE);
		assert_int_equal(h.power_at_take, SIM_POWER_D0);
		pm_now(f, &st, &power);
		assert_int_equal(st.state, UGPU_PM_ACTIVE);
		assert_int_equal(power, SIM_POWER_D0);
		assert_int_equal(st.cycles, cycles0 + (uint64_t)cyc + 1);
		assert_int_equal(st.failures, 0);
		pop_verify(f, o, NOBJ, cyc + 1);
		assert_int_equal(held(fk), 1);
	}

	/* Stop releases the inhibitor it holds. */
	ugpu_logind_stop(*ln);
	*ln = NULL;
	if (!fake_wait(fk, c_all_hup, 0, WAIT_MS))
		fail_msg("ugpu_logind_stop() left an inhibitor held");
	assert_int_equal(n_taken(fk), 3);
	pm_now(f, &st, &power);
	assert_int_equal(st.state, UGPU_PM_ACTIVE);

	/* The notifier's socket and inhibitor dups: all gone. More fds than
	 * before is a leak; fewer is another thread of the process (the
	 * device's own) closing one of its fds meanwhile (seen once in CI). */
	if (count_fds(false) > fds0) {
		count_fds(true);
		fail_msg("%d fds open, %d before ugpu_logind_start()", count_fds(false), fds0);
	}
	/* The device still works with the notifier gone. */
	pop_verify(f, o, NOBJ, 2);
	for (i = 0; i < NOBJ; i++)
		ugpu_bo_put(o[i].bo);
}

/*
 * PrepareForSleep(false) without a true before it (the notifier started
 * while logind was already sleeping, or the sleep was aborted): the device
 * stays ACTIVE and the notifier still holds exactly one inhibitor, which it
 * releases at the next PrepareForSleep(true) (otherwise logind would wait
 * InhibitDelayMaxSec on every sleep for an fd nobody closes).
 */
static void test_false_without_true(void **state)
{
	struct tfx *t = *state;
	struct fx *f = t->f;
	struct fake *fk = &t->fk;
	struct ugpu_logind **ln = &t->ln;
	struct ugpu_pm_stats st;
	enum sim_power_state power;
	struct ugpu_bo *bo = bo_new(f->dev, MiB, UGPU_BO_PINNED, V, S, "p");
	uint64_t cycles0;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MiB, 51), 0);
	pm_now(f, &st, &power);
	cycles0 = st.cycles;
	assert_int_equal(ugpu_logind_start(f->dev, ln), 0);
	fake_cmd(fk, 'F');
	fake_cmd(fk, 'T');
	/* After the sleep handling, nothing may be held. */
	if (!fake_wait(fk, c_hup, 0, WAIT_MS))
		fail_msg("the first inhibitor was not released at PrepareForSleep(true)");
	if (!fake_wait(fk, c_all_hup, 0, WAIT_MS))
		fail_msg("%d inhibitor(s) still held after PrepareForSleep(true)", held(fk));
	pm_now(f, &st, &power);
	assert_int_equal(st.state, UGPU_PM_SUSPENDED);
	assert_int_equal(power, SIM_POWER_D3COLD);
	{
		int n = n_taken(fk);

		fake_cmd(fk, 'F');
		if (!fake_wait(fk, c_taken, n + 1, WAIT_MS))
			fail_msg("no inhibitor retaken after resume");
	}
	pm_now(f, &st, &power);
	assert_int_equal(st.state, UGPU_PM_ACTIVE);
	assert_int_equal(st.cycles, cycles0 + 1);
	assert_int_equal(bo_verify(bo, MiB, 51), -1);
	assert_int_equal(held(fk), 1);
	ugpu_logind_stop(*ln);
	*ln = NULL;
	if (!fake_wait(fk, c_all_hup, 0, WAIT_MS))
		fail_msg("ugpu_logind_stop() left an inhibitor held");
	ugpu_bo_put(bo);
}

/*
 * A PrepareForSleep from a connection that is not org.freedesktop.login1
 * (any local process may emit signals on the system bus) must not suspend
 * the device. The spoofed signal is routed before the real one (a round trip
 * to the daemon on the spoofer's connection orders them), so by the time
 * the real PrepareForSleep(true) has been handled the spoof was seen too.
 */
static void test_spoofed_signal_ignored(void **state)
{
	struct tfx *t = *state;
	struct fx *f = t->f;
	struct fake *fk = &t->fk;
	struct ugpu_logind **ln = &t->ln;
	struct ugpu_pm_stats st;
	enum sim_power_state power;
	sd_bus *spoof = NULL;
	uint64_t cycles0;

	assert_int_equal(bus_connect(&spoof), 0);
	pm_now(f, &st, &power);
	cycles0 = st.cycles;
	assert_int_equal(ugpu_logind_start(f->dev, ln), 0);
	assert_true(sd_bus_emit_signal(spoof, LOGIND_PATH, LOGIND_IFACE, "PrepareForSleep", "b", 1) >=
		    0);
	/* GetId round trip: the daemon has routed the spoof once it answers. */
	assert_true(sd_bus_call_method(spoof, "org.freedesktop.DBus", "/org/freedesktop/DBus",
				       "org.freedesktop.DBus", "GetId", NULL, NULL, "") >= 0);
	usleep(300 * 1000); /* and the notifier's thread had time to act on it */
	pm_now(f, &st, &power);
	assert_int_equal(st.state, UGPU_PM_ACTIVE);
	assert_int_equal(power, SIM_POWER_D0);
	assert_int_equal(held(fk), 1);
	assert_int_equal(n_taken(fk), 1);

	/* The real one still works. */
	fake_cmd(fk, 'T');
	if (!fake_wait(fk, c_hup, 0, WAIT_MS))
		fail_msg("inhibitor not released after the real PrepareForSleep(true)");
	assert_int_equal(inh_get(fk, 0).state_at_hup, UGPU_PM_SUSPENDED);
	fake_cmd(fk, 'F');
	if (!fake_wait(fk, c_taken, 2, WAIT_MS))
		fail_msg("no inhibitor retaken after resume");
	pm_now(f, &st, &power);
	assert_int_equal(st.state, UGPU_PM_ACTIVE);
	assert_int_equal(st.cycles, cycles0 + 1);
	ugpu_logind_stop(*ln);
	*ln = NULL;
	sd_bus_flush_close_unref(spoof);
	assert_true(fake_wait(fk, c_all_hup, 0, WAIT_MS));
}

/*
 * The application drove suspend itself. A device it left PREPARED is
 * completed to SUSPENDED at PrepareForSleep(true) (VRAM is lost over the
 * sleep) and resumed at PrepareForSleep(false); a device it SUSPENDED is
 * left alone both ways (not resumed behind its back), and the inhibitor is
 * still released and retaken.
 */
static void test_application_states(void **state)
{
	struct tfx *t = *state;
	struct fx *f = t->f;
	struct fake *fk = &t->fk;
	struct ugpu_logind **ln = &t->ln;
	struct ugpu_pm_stats st;
	enum sim_power_state power;
	struct ugpu_bo *bo = bo_new(f->dev, MiB, UGPU_BO_PINNED, V, S, "p");
	uint64_t cycles0;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MiB, 77), 0);
	pm_now(f, &st, &power);
	cycles0 = st.cycles;
	assert_int_equal(ugpu_logind_start(f->dev, ln), 0);

	/* PREPARED by the application: completed, then resumed. */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	fake_cmd(fk, 'T');
	if (!fake_wait(fk, c_hup, 0, WAIT_MS))
		fail_msg("inhibitor not released at PrepareForSleep(true) (device PREPARED)");
	assert_int_equal(inh_get(fk, 0).state_at_hup, UGPU_PM_SUSPENDED);
	assert_int_equal(inh_get(fk, 0).power_at_hup, SIM_POWER_D3COLD);
	fake_cmd(fk, 'F');
	if (!fake_wait(fk, c_taken, 2, WAIT_MS))
		fail_msg("no inhibitor retaken after resume");
	assert_int_equal(inh_get(fk, 1).state_at_take, UGPU_PM_ACTIVE);
	pm_now(f, &st, &power);
	assert_int_equal(st.state, UGPU_PM_ACTIVE);
	assert_int_equal(power, SIM_POWER_D0);
	assert_int_equal(st.cycles, cycles0 + 1);
	assert_int_equal(bo_verify(bo, MiB, 77), -1);

	/* SUSPENDED by the application: left so across the sleep. */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	fake_cmd(fk, 'T');
	if (!fake_wait(fk, c_hup, 1, WAIT_MS))
		fail_msg("inhibitor not released at PrepareForSleep(true) (device SUSPENDED)");
	fake_cmd(fk, 'F');
	if (!fake_wait(fk, c_taken, 3, WAIT_MS))
		fail_msg("no inhibitor retaken after PrepareForSleep(false)");
	assert_int_equal(inh_get(fk, 2).state_at_take, UGPU_PM_SUSPENDED);
	pm_now(f, &st, &power);
	assert_int_equal(st.state, UGPU_PM_SUSPENDED);
	assert_int_equal(power, SIM_POWER_D3COLD);
	assert_int_equal(st.failures, 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	assert_int_equal(bo_verify(bo, MiB, 77), -1);
	assert_int_equal(held(fk), 1);
	ugpu_logind_stop(*ln);
	*ln = NULL;
	if (!fake_wait(fk, c_all_hup, 0, WAIT_MS))
		fail_msg("ugpu_logind_stop() left an inhibitor held");
	ugpu_bo_put(bo);
}

/*
 * The application's own prepare is running when PrepareForSleep(true)
 * arrives: the notifier's prepare queues behind it and then finds the device
 * PREPARED (-EBUSY). That is where it was going, not a failure: it completes
 * the suspend, the application's backups and runtime-PM reference survive,
 * the host sleeps with the device in D3cold, and the wake resumes it. (A
 * notifier that took -EBUSY as a failure cancelled the application's prepare
 * and let the host sleep with the device in D0.)
 */
struct during_prepare {
	struct fake *fk;
	int hits;
};

static void emit_during_prepare(void *arg, enum test_point_id id, void *obj)
{
	struct during_prepare *d = arg;

	(void)id, (void)obj;
	/* Atomic: the notifier thread's own prepare may pass here while the
	 * test thread reads the count. */
	if (__atomic_fetch_add(&d->hits, 1, __ATOMIC_RELAXED))
		return;
	fake_cmd(d->fk, 'T');
	/* The notifier's thread gets the signal and queues on the PM lock
	 * that this prepare holds. */
	usleep(300 * 1000);
}

static void test_application_prepare_in_flight(void **state)
{
	struct tfx *t = *state;
	struct fx *f = t->f;
	struct fake *fk = &t->fk;
	struct ugpu_logind **ln = &t->ln;
	struct during_prepare d = { .fk = fk };
	struct ugpu_pm_stats st;
	enum sim_power_state power;
	struct ugpu_bo *bo = bo_new(f->dev, MiB, UGPU_BO_PINNED, V, S, "p");
	uint64_t cycles0;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MiB, 88), 0);
	pm_now(f, &st, &power);
	cycles0 = st.cycles;
	assert_int_equal(ugpu_logind_start(f->dev, ln), 0);
	test_point_set(TEST_POINT_PM_PREPARE, emit_during_prepare, &d);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	test_point_set(TEST_POINT_PM_PREPARE, NULL, NULL);
	assert_true(__atomic_load_n(&d.hits, __ATOMIC_RELAXED) >= 1); /* the notifier's own prepare may pass it too */
	if (!fake_wait(fk, c_hup, 0, WAIT_MS))
		fail_msg("inhibitor not released at PrepareForSleep(true)");
	assert_int_equal(inh_get(fk, 0).state_at_hup, UGPU_PM_SUSPENDED);
	assert_int_equal(inh_get(fk, 0).power_at_hup, SIM_POWER_D3COLD);
	pm_now(f, &st, &power);
	assert_int_equal(st.state, UGPU_PM_SUSPENDED);
	assert_int_equal(st.failures, 0);
	assert_true(st.backups_prepared > 0);
	fake_cmd(fk, 'F');
	if (!fake_wait(fk, c_taken, 2, WAIT_MS))
		fail_msg("no inhibitor retaken after resume");
	pm_now(f, &st, &power);
	assert_int_equal(st.state, UGPU_PM_ACTIVE);
	assert_int_equal(power, SIM_POWER_D0);
	assert_int_equal(st.cycles, cycles0 + 1);
	assert_int_equal(bo_verify(bo, MiB, 88), -1);
	ugpu_logind_stop(*ln);
	*ln = NULL;
	if (!fake_wait(fk, c_all_hup, 0, WAIT_MS))
		fail_msg("ugpu_logind_stop() left an inhibitor held");
	ugpu_bo_put(bo);
}

/* ugpud (next to the tests) with --logind on the embedded device at @sock;
 * waits (bounded) until it accepts. Its pid, or -1. */
static pid_t ugpud_spawn(const char *sock)
{
	const char *dir = getenv("UGPU_BUILD_DIR");
	char bin[512];
	pid_t pid;

	if (!dir)
		return -1;
	snprintf(bin, sizeof(bin), "%s/ugpud", dir);
	pid = fork();
	if (pid < 0)
		return -1;
	if (!pid) {
		execl(bin, bin, "--device", "sim:64M", "--socket", sock, "--metrics", "off",
		      "--logind", (char *)NULL);
		_exit(127);
	}
	if (sock_wait_accepting(sock, WAIT_MS))
		return pid;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

static void test_daemon_follows_logind(void **state)
{
	struct tfx *t = *state;
	struct fake *fk = &t->fk;
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 256 << 10,
				  .placements = { UGPU_PLACEMENT_VRAM } };
	static unsigned char want[256 << 10], got[256 << 10];
	struct ugpu_logind *ln = NULL;
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_bo *bo;
	char sock[108], u[128];
	int st = 0;
	pid_t pid;

	assert_int_equal(ugpu_logind_watch(NULL, NULL, NULL, &ln), -EINVAL);
	snprintf(sock, sizeof(sock), "/tmp/ugpu-logind-d-%d.sock", (int)getpid());
	pid = ugpud_spawn(sock);
	assert_true(pid > 0);
	if (!fake_wait(fk, c_taken, 1, WAIT_MS))
		fail_msg("ugpud --logind took no inhibitor");
	assert_string_equal(inh_get(fk, 0).what, "sleep");
	assert_string_equal(inh_get(fk, 0).mode, "delay");
	snprintf(u, sizeof(u), "ugpud:%s", sock);
	assert_int_equal(ugpu_context_create(NULL, &ctx), 0);
	assert_int_equal(ugpu_device_open(ctx, u, &dev), 0);
	/* the daemon does it for all its clients: not one client's business */
	assert_int_equal(ugpu_logind_start(dev, &ln), -EOPNOTSUPP);
	assert_int_equal(ugpu_bo_create(dev, &o, &bo), 0);
	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = (unsigned char)(i * 131 + 7);
	assert_int_equal(ugpu_bo_write(bo, 0, want, sizeof(want)), 0);
	pthread_mutex_lock(&fk->lock);
	fk->remote = dev; /* sampled at the next hangup */
	pthread_mutex_unlock(&fk->lock);

	fake_cmd(fk, 'T');
	if (!fake_wait(fk, c_hup, 0, WAIT_MS))
		fail_msg("ugpud did not release its inhibitor at PrepareForSleep(true)");
	/* the host was let sleep only once the device was off */
	assert_int_equal(inh_get(fk, 0).remote_power_at_hup, UGPU_POWER_D3COLD);
	assert_int_equal(ugpu_bo_read(bo, 0, got, 4096), -EAGAIN);
	assert_true(remote_is_suspended(dev)); /* the event came */
	assert_int_equal(ugpu_device_query(dev, &info), 0);
	assert_int_equal(info.power_state, UGPU_POWER_D3COLD);
	assert_int_equal(held(fk), 0);

	fake_cmd(fk, 'F');
	if (!fake_wait(fk, c_taken, 2, WAIT_MS))
		fail_msg("ugpud took no inhibitor again after PrepareForSleep(false)");
	assert_int_equal(ugpu_bo_read(bo, 0, got, sizeof(got)), 0);
	assert_memory_equal(got, want, sizeof(got));
	assert_false(remote_is_suspended(dev));
	assert_int_equal(ugpu_device_query(dev, &info), 0);
	assert_int_equal(info.power_state, UGPU_POWER_D0);
	assert_int_equal(held(fk), 1);

	/* A device an administrator suspended (DEVICE_PM) is left so over the
	 * sleep, and not resumed behind its back at the wake. */
	{
		struct ugpud_device_pm_req pm = { .device = 0, .action = UGPUD_PM_PREPARE };

		assert_int_equal(remote_call(dev, UGPUD_DEVICE_PM, &pm, sizeof(pm), NULL, 0, NULL, 0,
					     NULL), 0);
		pm.action = UGPUD_PM_SUSPEND;
		assert_int_equal(remote_call(dev, UGPUD_DEVICE_PM, &pm, sizeof(pm), NULL, 0, NULL, 0,
					     NULL), 0);
		fake_cmd(fk, 'T');
		if (!fake_wait(fk, c_hup, 1, WAIT_MS))
			fail_msg("ugpud kept its inhibitor with the device suspended already");
		fake_cmd(fk, 'F');
		if (!fake_wait(fk, c_taken, 3, WAIT_MS))
			fail_msg("ugpud took no inhibitor again after the second sleep");
		assert_int_equal(ugpu_bo_read(bo, 0, got, 4096), -EAGAIN); /* still suspended */
		assert_int_equal(ugpu_device_query(dev, &info), 0);
		assert_int_equal(info.power_state, UGPU_POWER_D3COLD);
		pm.action = UGPUD_PM_RESUME;
		assert_int_equal(remote_call(dev, UGPUD_DEVICE_PM, &pm, sizeof(pm), NULL, 0, NULL, 0,
					     NULL), 0);
		assert_int_equal(ugpu_bo_read(bo, 0, got, sizeof(got)), 0);
		assert_memory_equal(got, want, sizeof(got));
	}
	pthread_mutex_lock(&fk->lock);
	fk->remote = NULL;
	pthread_mutex_unlock(&fk->lock);
	ugpu_bo_put(bo);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (!fake_wait(fk, c_all_hup, 0, WAIT_MS))
		fail_msg("ugpud's exit left its inhibitor held");
}

static int group_setup(void **state)
{
	(void)state;
	if (bus_daemon_start())
		return -1; /* reason printed; the group fails */
	/* sd_bus_open_system() in the library connects here. */
	return setenv("DBUS_SYSTEM_BUS_ADDRESS", bus_d.address, 1) ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
	bus_daemon_stop();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sleep_cycles, setup, teardown),
		cmocka_unit_test_setup_teardown(test_false_without_true, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spoofed_signal_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_application_states, setup, teardown),
		cmocka_unit_test_setup_teardown(test_application_prepare_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_daemon_follows_logind, setup, teardown),
	};
	int ret;

	if (access(DBUS_DAEMON, X_OK)) {
		printf("skip: %s not installed (Debian package dbus-daemon)\n", DBUS_DAEMON);
		return 77;
	}
	ret = cmocka_run_group_tests(tests, group_setup, group_teardown);
	bus_daemon_stop(); /* when a test aborted the group */
	return ret;
}

#else /* !HAVE_SD_BUS */

int main(void)
{
	printf("skip: built without libsystemd's sd-bus (libsystemd-dev)\n");
	return 77;
}

#endif
