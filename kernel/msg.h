/* Mail through the kernel: msg.send checks the sender's talks_to and puts the message into the
 * receiver's durable inbox (aos-storage), msg.publish fans out to subscribers, msg.ls peeks. */
#ifndef AOS_KMSG_H
#define AOS_KMSG_H

#include "agents.h"

/* agent or admin: msg.send, msg.publish (answer once the copies are durable, the receivers
 * woken); admin: msg.ls. caller: the agent's name, "" on the control socket. */
void msg_m_send(const aos_env *req, const char *caller, kreply *k);
void msg_m_publish(const aos_env *req, const char *caller, kreply *k);
void msg_m_ls(const aos_env *req, const char *caller, kreply *k);

#endif
