/* Baseline for benches/race.rs: the tightest single-threaded form of the race
 * generator's send path. One IPPROTO_RAW socket (IP_HDRINCL), one sendto() per
 * IPv4/UDP packet of the same size as the generator's (20 + 8 + payload bytes).
 * Packet i has source port sport + i / per_flow, so with per_flow = 2 every flow
 * gets two packets, as one race iteration with two threads does (one new conntrack
 * entry per two packets downstream), just not at the same instant.
 *
 * usage: race_sendto SRC DST SPORT DPORT PAYLOAD COUNT PER_FLOW
 * prints: sent=N errors=N seconds=S pps=P
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

int main(int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: %s SRC DST SPORT DPORT PAYLOAD COUNT PER_FLOW\n", argv[0]);
		return 2;
	}
	struct in_addr src, dst;
	if (inet_pton(AF_INET, argv[1], &src) != 1 || inet_pton(AF_INET, argv[2], &dst) != 1) {
		fprintf(stderr, "bad address\n");
		return 2;
	}
	unsigned sport = strtoul(argv[3], NULL, 10), dport = strtoul(argv[4], NULL, 10);
	size_t payload = strtoul(argv[5], NULL, 10);
	unsigned long count = strtoul(argv[6], NULL, 10), per_flow = strtoul(argv[7], NULL, 10);
	if (payload < 16 || payload > 1400 || per_flow == 0) {
		fprintf(stderr, "bad payload or per_flow\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	size_t len = 28 + payload;
	uint8_t pkt[1500];
	memset(pkt, 0, sizeof pkt);
	pkt[0] = 0x45;
	pkt[2] = len >> 8;
	pkt[3] = len & 0xff;
	pkt[6] = 0x40; /* DF; id 0: the kernel picks one */
	pkt[8] = 64;
	pkt[9] = IPPROTO_UDP;
	memcpy(pkt + 12, &src, 4);
	memcpy(pkt + 16, &dst, 4);
	uint16_t c = fold(sum16(pkt, 20, 0));
	pkt[10] = c >> 8;
	pkt[11] = c & 0xff;
	uint8_t *udp = pkt + 20;
	udp[2] = dport >> 8;
	udp[3] = dport & 0xff;
	udp[4] = (len - 20) >> 8;
	udp[5] = (len - 20) & 0xff;
	memset(udp + 8, 'x', payload);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr = dst };
	unsigned long sent = 0, errors = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned long i = 0; i < count; i++) {
		uint16_t sp = (uint16_t)(sport + i / per_flow);
		udp[0] = sp >> 8;
		udp[1] = sp & 0xff;
		/* The same tag layout as the generator's payload: a distinct packet number. */
		uint32_t seq = htonl((uint32_t)i);
		memcpy(udp + 8 + 12, &seq, 4);
		udp[6] = udp[7] = 0;
		/* UDP checksum over the pseudo-header, header and payload. */
		uint32_t s = sum16(pkt + 12, 8, 0) + IPPROTO_UDP + (len - 20);
		uint16_t uc = fold(sum16(udp, len - 20, s));
		if (uc == 0)
			uc = 0xffff;
		udp[6] = uc >> 8;
		udp[7] = uc & 0xff;
		if (sendto(fd, pkt, len, 0, (struct sockaddr *)&to, sizeof to) == (ssize_t)len)
			sent++;
		else
			errors++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("sent=%lu errors=%lu seconds=%.6f pps=%.1f\n", sent, errors, secs, sent / secs);
	return 0;
}
