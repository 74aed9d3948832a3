/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: ugpu-sim's handling of client requests.
 *
 * Each input (format: fuzz_input.h) is one client session against a fresh
 * reference device created without threads or sockets
 * (sim_create_detached): every record becomes the message the server thread
 * would have read, with the fds it asks for made for real, and runs through
 * srv_handle_msg(), the server thread's own dispatcher. Replies are captured
 * through the device's transmit seam instead of a socket, and checked: a
 * command that asks for a reply gets exactly one, with its msg_id and
 * command, whose size is what was sent, and an error reply carries no
 * payload. A violated invariant, a sanitizer report, a crash or a hang (a
 * blocking fd write, as in issue 12's find 3) is a finding.
 *
 * Engines do not run here (no threads): descriptors, DMA through windows and
 * in-band DMA are the black-box test's part (tests/integration/
 * test_hostile_client.c), against a live device.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/fuzz/fuzz_input.h"
#include "tools/ugpu-sim/sim_internal.h"

/* mkcorpus.c sets this to see the replies (to make the client's corpus). */
void (*fz_sim_observe)(const uint8_t *msg, size_t len, const int *fds, int nfds);

static struct {
	unsigned replies;
	struct vfu_hdr last;
} cap;

static int capture(struct sim_dev *dev, bool request, const struct iovec *iov, int cnt,
		   const int *fds, int nfds)
{
	uint8_t buf[VFU_MAX_MSG];
	size_t len = 0;

	(void)dev;
	if (request)
		__builtin_trap(); /* no engine runs: nothing may send a request */
	for (int i = 0; i < cnt; i++) {
		if (iov[i].iov_len > sizeof(buf) - len)
			__builtin_trap(); /* a reply larger than any message may be */
		memcpy(buf + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	memcpy(&cap.last, buf, sizeof(cap.last));
	if (cap.last.size != len || (cap.last.flags & VFU_F_TYPE_MASK) != VFU_F_TYPE_REPLY)
		__builtin_trap();
	if ((cap.last.flags & VFU_F_ERROR) && (len != sizeof(cap.last) || !cap.last.error))
		__builtin_trap(); /* an error reply is a header with an errno */
	cap.replies++;
	if (fz_sim_observe)
		fz_sim_observe(buf, len, fds, nfds);
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* The real device threads block SIGPIPE; here the dispatcher runs on
	 * the fuzzer's thread. */
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { .p = data, .left = size };
	struct sim_opts o;
	struct sim_dev *dev;
	struct fz_rec rec;
	struct sim *sim;

	sim_opts_init(&o);
	o.vram_size = 1u << 20; /* the smallest: D3cold poisons all of it */
	o.max_dma_maps = 8;
	if (sim_create_detached(&o, &sim))
		return 0;
	dev = sim->devs[0];
	dev->tx_hook = capture;
	pthread_mutex_lock(&dev->lock);
	dev->connected = true;
	pthread_mutex_unlock(&dev->lock);

	while (fz_next(&in, &rec)) {
		struct fz_keep keep = { .n = 0 };
		struct sim_msg *m = calloc(1, sizeof(*m));
		size_t follow;
		bool wants_reply, closed;

		if (!m)
			break;
		m->hdr = rec.hdr;
		follow = srv_msg_frame(m);
		if (follow > rec.avail) {
			free(m); /* cut mid-message: the client hung up */
			break;
		}
		if (m->len) {
			m->body = malloc(m->len);
			if (!m->body) {
				free(m);
				break;
			}
			memcpy(m->body, rec.rest, m->len);
		}
		fz_consume(&in, follow);
		m->nfds = fz_make_fds(rec.spec, m->fds, &keep);

		/* What the server must do: answer every command that does not
		 * say NO_REPLY exactly once (a reply is routed, not answered),
		 * unless it closes the session instead (a VERSION of another
		 * major does); then it says nothing more. */
		wants_reply = !(rec.hdr.flags & VFU_F_NO_REPLY) &&
			      (rec.hdr.flags & VFU_F_TYPE_MASK) != VFU_F_TYPE_REPLY;
		cap.replies = 0;
		srv_handle_msg(dev, m);
		srv_msg_free(m);
		fz_keep_close(&keep);
		pthread_mutex_lock(&dev->send_lock);
		closed = dev->client_broken;
		pthread_mutex_unlock(&dev->send_lock);
		if (closed) {
			if (cap.replies)
				__builtin_trap();
			break;
		}
		if (cap.replies != (wants_reply ? 1u : 0u))
			__builtin_trap();
		if (wants_reply && (cap.last.msg_id != rec.hdr.msg_id || cap.last.cmd != rec.hdr.cmd))
			__builtin_trap();
	}
	srv_disconnect(dev);
	sim_stop(sim);
	return 0;
}
